"""UNet-F, the fully supervised upper bound: ``--method supervised --set data.labeled=all`` trains on every
training case (none left unlabeled) and evaluates like any run."""

from __future__ import annotations

import json

from _cli_runs import smoke


def test_supervised_on_every_training_case(tmp_path):
    _, rows, summary, _ = smoke(tmp_path, "supervised", 2, ["data.labeled=all"])
    split = json.loads((tmp_path / "run" / "supervised" / "split.json").read_text())
    assert split["num_unlabeled_items"] == 0 and split["num_labeled_items"] > 0
    assert not split.get("unlabeled")
    assert list(rows[0])[3:5] == ["loss", "loss_sup"]
    assert 0.0 <= summary["mean"]["dice"] <= 1.0
