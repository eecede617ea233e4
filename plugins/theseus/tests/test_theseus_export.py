"""export_successor round trip: save_pretrained, then AutoModelFor... in a subprocess where hfplug cannot import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
from hfplug_theseus import export_successor, theseus_wrap

from hfplug.testing import tiny_model

LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class HideHfplug(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].startswith("hfplug"):
                raise ModuleNotFoundError(f"{name} is hidden in this test")
            return None

    sys.meta_path.insert(0, HideHfplug())
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        import hfplug_theseus  # noqa: F401
        sys.exit("hfplug_theseus is importable: the environment is not isolated")
    except ModuleNotFoundError:
        pass
    cases, out = json.loads(sys.argv[1]), {}
    for name, folder, auto in cases:
        model = {"seq": AutoModelForSequenceClassification, "lm": AutoModelForCausalLM}[auto].from_pretrained(folder)
        inputs = torch.load(f"{folder}/inputs.pt")
        with torch.no_grad():
            out[name] = {"logits": model(**inputs).logits.tolist(), "layers": model.config.num_hidden_layers,
                         "class": type(model).__name__}
    assert not [m for m in sys.modules if m.startswith("hfplug")]
    print(json.dumps(out))
    """
)


def trained_wrap(family: str, task: str, layers: int, n: int) -> torch.nn.Module:
    depth = {"n_layer": layers} if family == "gpt2" else {"num_hidden_layers": layers}
    model = tiny_model(family, task, seed=1, **depth)
    theseus_wrap(model, n, seed=0)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(3, 1000, (4, 8), generator=torch.Generator().manual_seed(0))
    labels = ids if task == "causal-lm" else ids[:, 0] % 2
    for step in range(3):  # move the successor blocks away from their copies of predecessor blocks
        model.theseus.set_step(step, 0.5)
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_exported_successor_loads_without_hfplug_and_matches_wrapped_eval(tmp_path):
    cases, expected = [], {}
    for family, task, auto, layers, n in [
        ("bert", "sequence-classification", "seq", 6, 3),
        ("llama", "causal-lm", "lm", 5, 2),
        ("gpt2", "causal-lm", "lm", 4, 3),
    ]:
        model = trained_wrap(family, task, layers, n)
        ids = torch.randint(3, 1000, (2, 7), generator=torch.Generator().manual_seed(3))
        mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
        inputs = {"input_ids": ids, "attention_mask": mask}
        with torch.no_grad():
            expected[family] = model(**inputs).logits
        exported = export_successor(model)
        assert exported.config.num_hidden_layers == n and not exported.training
        assert type(exported) is type(model)
        folder = tmp_path / family
        exported.save_pretrained(folder)
        torch.save(inputs, folder / "inputs.pt")
        cases.append((family, str(folder), auto))

    result = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HFPLUG_PLUGINS": "", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for family in expected:
        got = torch.tensor(loaded[family]["logits"])
        torch.testing.assert_close(got, expected[family], rtol=1e-4, atol=1e-5)
    assert [loaded[f]["layers"] for f in ("bert", "llama", "gpt2")] == [3, 2, 3]
    assert loaded["bert"]["class"] == "BertForSequenceClassification"
    assert loaded["gpt2"]["class"] == "GPT2LMHeadModel"
