# Tables and figures: each table rendered beside the paper's values; one named target each.
# The claims table: the paper's statements about its results checked on the rendered tables.

from channel_ssl.claims import claim_tables


rule render_table:
    input:
        table_inputs,
    output:
        csv=report(
            res("tables/{table}.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        md=res("tables/{table}.md"),
    log:
        res("logs/tables/{table}.log"),
    wildcard_constraints:
        table="|".join(registry.TABLES),
    conda:
        "../../envs/evaluate.yaml"
    params:
        args=table_args,
        note=lambda w: table_note(w.table),
        title=lambda w: load_paper_tables()[w.table]["title"],
        how=lambda w: table_how(w.table),
    shell:
        "channel-ssl render-table --table {wildcards.table} {params.args}"
        " --out-csv {output.csv} --out-md {output.md} --note '{params.note}' --log {log}"


rule render_claims:
    input:
        [table_output(t) for t in claim_tables()],
    output:
        csv=report(
            res("tables/claims.csv"),
            category="Tables",
            labels={"table": "claims"},
        ),
        md=res("tables/claims.md"),
    log:
        res("logs/tables/claims.log"),
    conda:
        "../../envs/evaluate.yaml"
    params:
        note=scale_note(),
    shell:
        "channel-ssl render-claims --table-csv {input} --out-csv {output.csv}"
        " --out-md {output.md} --note '{params.note}' --log {log}"


rule claims:
    default_target: False
    input:
        rules.render_claims.output,


rule render_figure:
    input:
        unpack(figure_inputs),
    output:
        report(
            res("figures/{figure}.png"),
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        res("logs/figures/{figure}.log"),
    conda:
        "../../envs/evaluate.yaml"
    params:
        subset=lambda w, input: (
            f"--features-subset {input.subset} --subset-fraction 0.5"
            if "subset" in input.keys()
            else ""
        ),
        note=scale_note(),
        seed=config["seed"],
        title=lambda w: registry.figure(w.figure).title,
        run=lambda w: registry.figure(w.figure).run,
    shell:
        "channel-ssl render-figure --figure {wildcards.figure} --features {input.features}"
        " --manifest {input.manifest} {params.subset} --out {output} --seed {params.seed}"
        " --note '{params.note}' --log {log}"


for _target in registry.TARGETS:

    rule:
        name:
            _target
        default_target: False
        input:
            target_outputs(_target),
