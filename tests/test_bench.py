"""The benchmark harness (bench/) and its MorphEm reference."""

from __future__ import annotations

import numpy as np
import pytest

from bench import morphem_reference
from bench.evaluation import chammi_like
from bench.harness import Row, Timing, interleaved, markdown, table
from channel_ssl.eval.eval_chammi import LEAVE_ONE_OUT, evaluate_chammi, load_chammi_features


def test_interleaved_alternates_order_and_takes_medians():
    calls = []
    timing, ours, theirs = interleaved(
        lambda: calls.append("o") or "o",
        lambda: calls.append("r") or "r",
        3,
        warmup=False,
        collect=False,
    )
    assert calls == ["o", "r", "r", "o", "o", "r"]
    assert (ours, theirs) == ("o", "r") and len(timing.ours_runs) == 3
    with pytest.raises(ValueError, match="repeats"):
        interleaved(lambda: 0, lambda: 0, 0)


def test_rows_judge_their_targets():
    slow = Row("a", Timing(1.2, 1.0, [], []), "slowdown", 1.1)
    fast = Row("b", Timing(1.0, 20.0, [], []), "speedup", 10.0)
    unequal = Row("c", Timing(1.0, 20.0, [], []), "speedup", 10.0, extra_ok=False)
    assert not slow.met and fast.met and not unequal.met
    df = table([slow, fast, unequal])
    assert df["met"].tolist() == ["NO", "yes", "NO"]
    assert df["ratio"].tolist()[:2] == ["1.20x", "20.00x faster"]
    assert markdown(df).count("\n") == 5
    # a ratio that rounds to its target is printed with a third decimal
    close = Row("d", Timing(1.2534, 1.0, [], []), "slowdown", 1.25)
    assert close.as_dict()["ratio"] == "1.253x" and not close.met


def test_morphem_restatement_scores_as_eval_chammi(tmp_path, capsys):
    root, feats = tmp_path / "CHAMMI", tmp_path / "features"
    chammi_like(root, feats, n_features=16, scale=0.004)
    ours = evaluate_chammi(root, load_chammi_features(root, feats, "features.npy"))
    for dataset, leave_out in LEAVE_ONE_OUT.items():
        task, column = leave_out if leave_out else (None, None)
        theirs = morphem_reference.evaluate(
            feats / dataset / "features.npy", root / dataset / "enriched_meta.csv", task, column
        )
        mine = ours[ours["dataset"] == dataset]
        assert mine["task"].tolist() == theirs["tasks"]
        np.testing.assert_array_equal(mine["accuracy"].to_numpy(), theirs["accuracies"])
        np.testing.assert_array_equal(mine["f1_score_macro"].to_numpy(), theirs["f1scores_macro"])
    assert "Running classification pipeline" in capsys.readouterr().out


def test_gpu_section_runs_at_toy_sizes_on_cpu(tmp_path):
    """bench/gpu.py --quick: every part runs (the GPU numbers themselves need CUDA)."""
    import json

    from bench import gpu

    assert gpu.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"), "--quick"]) == 0
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert [s["family"] for s in report["steps"]] == ["boc", "cvit"]
    # FLOPs counted over a whole step: the Channel-ViT sees 5 channels as tokens, BoC one
    boc, cvit = report["steps"]
    assert 0 < boc["model_tflop_per_step"] < cvit["model_tflop_per_step"]
    assert boc["mfu"] is None  # no bf16 peak on CPU
    assert report["extraction"]["images_per_s"] > 0
    run = report["paper_run"]
    assert run["ln_k"] == pytest.approx(np.log(256)) and np.isfinite(run["last_dino"])
    assert "Paper ViT-S/16 BoC recipe" in (tmp_path / "out" / "gpu.md").read_text()
