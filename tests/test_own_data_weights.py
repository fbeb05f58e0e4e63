"""Released weights: a DINOv2-layout ViT (built by timm, not by this project) imported as a
checkpoint of this project gives the same features on the same input."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from channel_ssl.cli import main as cli_main
from channel_ssl.errors import UserError
from channel_ssl.train.checkpoint import load_backbone


def _dinov2_layout_vit(in_chans: int = 1) -> VisionTransformer:
    """timm's ViT in DINOv2's layout (CLS with a position embedding, LayerScale, qkv bias),
    sized like this project's 'micro' arch, with non-trivial random weights."""
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=8, in_chans=in_chans, embed_dim=64, depth=4, num_heads=4,
        mlp_ratio=4.0, qkv_bias=True, init_values=1.0, class_token=True, no_embed_class=False,
        num_classes=0, global_pool="token",
    )  # fmt: skip
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return vit.eval()


def _as_dinov2_file(vit: VisionTransformer, path, chunked: bool = False) -> None:
    state = {}
    for key, value in vit.state_dict().items():
        if chunked and key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = f"blocks.{index // 2}.{key[len('blocks.') :]}"  # DINOv2's BlockChunk layout
        state[f"backbone.{key}"] = value
    state["backbone.mask_token"] = torch.zeros(1, 64)
    state["dino_head.mlp.0.weight"] = torch.zeros(3, 3)  # heads are ignored
    torch.save({"teacher": state}, path)


@pytest.mark.parametrize("chunked", [False, True])
def test_imported_dinov2_weights_give_the_same_features(tmp_path, chunked):
    vit = _dinov2_layout_vit()
    _as_dinov2_file(vit, tmp_path / "teacher_checkpoint.pth", chunked)
    out = tmp_path / "checkpoint.pt"
    argv = ["import-weights", "--format", "dinov2", "--family", "boc", "--arch", "micro"]
    assert (
        cli_main(
            argv + ["--checkpoint", str(tmp_path / "teacher_checkpoint.pth"), "--out", str(out)]
        )
        == 0
    )
    backbone, run_config = load_backbone(out)
    assert run_config["model"]["family"] == "boc" and run_config["crops"]["global_crops_size"] == 32
    assert (tmp_path / "checkpoint.pt.prov.json").exists()  # a provenance record, like every step
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        reference = vit.forward_features(x)  # (B, 1 + N, D), final norm applied
        emb = backbone.embed(x, n_last_blocks=1)
    ours_cls = emb["cls_layers"][:, -1, 0]
    ours_patch = emb["patch"][:, 0]
    assert (ours_cls - reference[:, 0]).abs().max() < 1e-5
    assert (ours_patch - reference[:, 1:]).abs().max() < 1e-5


def test_import_errors_name_what_does_not_fit(tmp_path, capsys):
    vit = _dinov2_layout_vit()
    path = tmp_path / "w.pth"
    _as_dinov2_file(vit, path)
    from channel_ssl.own_data.import_weights import import_dinov2

    with pytest.raises(UserError, match="--arch vit_small is 12 blocks of width 384"):
        import_dinov2(path, "boc", "vit_small", tmp_path / "a.pt")
    state = torch.load(path)["teacher"]
    state["backbone.registers"] = torch.zeros(1, 4, 64)
    torch.save(state, path)
    with pytest.raises(UserError, match="does not know: \\['registers'\\]"):
        import_dinov2(path, "boc", "micro", tmp_path / "b.pt")
    del state["backbone.registers"], state["backbone.norm.weight"]
    torch.save(state, path)
    with pytest.raises(UserError, match="lacks 'norm.weight'"):
        import_dinov2(path, "boc", "micro", tmp_path / "c.pt")
    rgb = _dinov2_layout_vit(in_chans=3)
    _as_dinov2_file(rgb, path)
    with pytest.raises(UserError, match="takes 1 channel.*use --family fixed"):
        import_dinov2(path, "boc", "micro", tmp_path / "d.pt")
    fixed = import_dinov2(path, "fixed", "micro", tmp_path / "e.pt")
    backbone, _ = load_backbone(fixed)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        diff = (
            backbone.embed(x, n_last_blocks=1)["cls_layers"][:, -1, 0]
            - rgb.forward_features(x)[:, 0]
        )
    assert diff.abs().max() < 1e-5
    assert (
        cli_main(
            [
                "import-weights",
                "--arch",
                "micro",
                "--checkpoint",
                str(tmp_path / "no.pth"),
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_workflow_builds_tables_5_and_6_from_given_weights(tmp_path):
    """config 'pretrained': P-BoC-L's weights are an imported DINOv2-format checkpoint."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from channel_ssl.provenance import read_record

    repo = Path(__file__).resolve().parents[1]
    _as_dinov2_file(_dinov2_layout_vit(), tmp_path / "released.pth")
    imported = tmp_path / "boc-released.pt"
    argv = ["import-weights", "--arch", "micro", "--checkpoint", str(tmp_path / "released.pth")]
    assert cli_main(argv + ["--out", str(imported)]) == 0
    results = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "snakemake", "--cores", "2", "table5", "table6",
        "--configfile", "config/smoke.yaml", "--config", f"results_dir={results}",
        f"pretrained={json.dumps({'P-BoC-L': str(imported)})}",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=repo, capture_output=True, text=True, env=dict(os.environ, PATH="/usr/bin:/bin")
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rule use_pretrained" in proc.stdout + proc.stderr
    assert not (results / "logs" / "pretrain" / "P-BoC-L.log").read_text().count("iterations=")
    for table in ("table5", "table6"):
        md = (results / "tables" / f"{table}.md").read_text()
        assert f"Weights of P-BoC-L: {imported}" in md
        cells = pd.read_csv(results / "tables" / f"{table}.csv", dtype=str, keep_default_na=False)
        boc = cells[cells["row"] == "DINO BoC (Ours)"]
        assert (boc["reproduced"] != "").all()
    record = read_record(results / "pretrain" / "P-BoC-L" / "checkpoint.pt")
    assert record["step"] == "use-checkpoint"
    assert [i["path"] for i in record["inputs"]] == [str(imported)]
