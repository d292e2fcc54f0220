"""Exports load anywhere and score alike.

Tiny VRM and BT models on a bidirectional (BERT) and a decoder-only (Llama) encoder are trained once for the module;
the trained model (eval mode), the exported folder through ``AutoModelForSequenceClassification`` in a fresh process
(with ``vrm``, and without it through the remote code or a plain export), ``RewardScorer``, ``vrm-score`` and the
server must give the same rewards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import HANG_TIMEOUT, TINY_OVERRIDES, compose_train, random_model
from fastapi.testclient import TestClient
from safetensors import safe_open
from transformers import AutoTokenizer

from vrm.cli.export import main as export_main
from vrm.cli.score import main as score_main
from vrm.cli.train import train_and_export as train
from vrm.data.tokenize import EncodedSequence, PairEncoder
from vrm.errors import UnsafeCheckpointError
from vrm.models.modeling_vrm import VRMForSequenceClassification
from vrm.scoring.export import (
    AUTO_MAP,
    HEADS_FILE,
    MODEL_CARD,
    MODELING_FILE,
    POOLING_FILE,
    ExportError,
    export_checkpoint,
    export_model,
)
from vrm.scoring.export_folder import MANIFEST, verify_export
from vrm.scoring.scorer import RewardScorer
from vrm.scoring.server import create_app
from vrm.training.module import RewardModule

MULTI_TURN = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
              {"role": "user", "content": "And a red one?"}]
PROMPTS = ["How do I sort a list in Python?", "Write a short poem about the sea.", MULTI_TURN, "Hi",
           "Explain, step by step and in detail, " + "why the sky is blue and sunsets are red, " * 8]
RESPONSES = ["Use the built-in sorted() function; it returns a new list.", "Waves roll in and out.",
             "A strawberry.", "Hello! How can I help you today?", "Rayleigh scattering. " * 6]
ATOL = 1e-5
COMBOS = [("vrm", "tiny_bert"), ("bt", "tiny_bert"), ("vrm", "tiny_llama"), ("bt", "tiny_llama")]
SMALL = ["data.synthetic.num_train=16", "data.synthetic.num_validation=8", "test=false"]


@dataclass
class Trained:
    """A trained tiny model, its VRM export (from train()) and its rewards on PROMPTS/RESPONSES."""

    root: Path
    best: Path
    export: Path
    encoded: list[EncodedSequence]
    expected: list[float]


def encode_all(net: VRMForSequenceClassification, tokenizer) -> list[EncodedSequence]:
    c = net.config
    encoder = PairEncoder(tokenizer, c.encoder_kind, c.max_sequence_length, c.truncation, c.use_token_types,
                          c.use_chat_template)
    return [encoder.encode(p, r) for p, r in zip(PROMPTS, RESPONSES)]


@torch.no_grad()
def rewards_one_by_one(net: VRMForSequenceClassification, encoded: list[EncodedSequence]) -> list[float]:
    """The model's own forward, one unpadded sequence at a time (no batching, no scorer)."""
    net.eval()
    return [float(net(torch.tensor([e.input_ids]), prompt_lengths=torch.tensor([e.prompt_length]),
                      token_type_ids=None if e.token_type_ids is None else torch.tensor([e.token_type_ids])
                      ).logits[0, 0]) for e in encoded]


def train_tiny(model_type: str, encoder: str, root: Path, extra: tuple[str, ...] = ()) -> Trained:
    cfg = compose_train(TINY_OVERRIDES + SMALL + [f"model={model_type}", f"encoder={encoder}",
                                                  f"export_dir={root / 'export'}", *extra], root)
    train(cfg)
    best = Path((root / "best_checkpoint.txt").read_text().strip())
    module = RewardModule.from_checkpoint(best)
    encoded = encode_all(module.net, AutoTokenizer.from_pretrained(module.hparams.tokenizer_path))
    return Trained(root, best, root / "export", encoded, rewards_one_by_one(module.net, encoded))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Trained]:
    out = {}
    for model_type, encoder in COMBOS:
        extra = ("logger=csv",) if (model_type, encoder) == ("vrm", "tiny_bert") else ()
        out[f"{model_type}-{encoder}"] = train_tiny(model_type, encoder,
                                                    tmp_path_factory.mktemp(f"{model_type}-{encoder}"), extra)
    return out


@pytest.fixture(scope="module")
def code_exports(models) -> dict[str, Path]:
    return {name: export_checkpoint(m.best, m.root / "with_code", with_code=True) for name, m in models.items()}


@pytest.fixture(scope="module")
def gpt2_plain(tmp_path_factory) -> tuple[Path, list[EncodedSequence], list[float]]:
    """A (randomly initialised) BT model on a tiny GPT-2, exported plain."""
    root = tmp_path_factory.mktemp("gpt2")
    net, enc = random_model(["model=bt", "encoder=tiny_gpt2"], root)
    net.eval()
    encoded = encode_all(net, enc.tokenizer)
    return export_model(net, enc.tokenizer, root / "plain", plain=True), encoded, rewards_one_by_one(net, encoded)


# -- in this process ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [f"{m}-{e}" for m, e in COMBOS])
def test_scorer_vrm_score_and_server_give_the_trained_rewards(models, code_exports, name, tmp_path):
    m = models[name]
    for folder in (m.export, code_exports[name]):
        scorer = RewardScorer.from_pretrained(folder, batch_size=2)
        assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(m.expected, abs=ATOL)

    lines = [{"id": i, "prompt": p, "response": r} for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    lines.append({"messages": MULTI_TURN + [{"role": "assistant", "content": RESPONSES[2]}]})
    lines.append({"query": f"\n\nHuman: {PROMPTS[0]}\n\nAssistant: {RESPONSES[0]}"})
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    score_main(["--model", str(m.export), "--input", str(src), "--output", str(dst), "--device", "cpu",
                "--no-progress"])
    scored = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [s["reward"] for s in scored] == pytest.approx(m.expected + [m.expected[2], m.expected[0]], abs=ATOL)
    assert [s.get("id") for s in scored[:5]] == list(range(5))  # the input objects are carried through
    is_vrm = name.startswith("vrm")
    assert ("objective_scores" in scored[0]) == is_vrm and ("weights" in scored[0]) == is_vrm

    client = TestClient(create_app(RewardScorer.from_pretrained(m.export)))
    answer = client.post("/score", json={"pairs": [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES)]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == pytest.approx(m.expected, abs=ATOL)


def test_scorer_helpers_agree(models):
    m = models["vrm-tiny_llama"]
    scorer = RewardScorer.from_pretrained(m.export, device="cpu", dtype="float32")
    conversation = MULTI_TURN + [{"role": "assistant", "content": RESPONSES[2]}]
    assert scorer.score_conversations([conversation]) == pytest.approx([m.expected[2]], abs=ATOL)
    from vrm.data.schema import PreferencePair

    chosen, rejected = scorer.score_pairs([PreferencePair.from_text(PROMPTS[0], RESPONSES[0], RESPONSES[3])])
    assert chosen[0] == pytest.approx(m.expected[0], abs=ATOL)
    details = scorer.score_details(PROMPTS, RESPONSES, num_samples=16)
    assert len(details["objective_scores"][0]) == len(details["weights"][0]) == 5  # K = 5, the default
    assert sum(details["weights"][0]) == pytest.approx(1.0, abs=1e-5)
    assert all(s > 0 for s in details["reward_std"])
    half = RewardScorer.from_pretrained(m.export, dtype="bfloat16").score(PROMPTS, RESPONSES)
    assert half == pytest.approx(m.expected, abs=0.1)


# -- in a fresh process ---------------------------------------------------------------------------
CHILD = r"""
import json, sys


class BlockVrm:
    # While installed, no module named vrm can be imported.

    def find_spec(self, name, path=None, target=None):
        if name == "vrm" or name.startswith("vrm."):
            raise ImportError(f"{name} is made unimportable by the test")


def vrm_modules():
    return [m for m in sys.modules if m.split(".")[0] == "vrm" and sys.modules[m] is not None]


def run(job):
    model = AutoModelForSequenceClassification.from_pretrained(job["folder"], use_safetensors=True, **job["load"])
    model.eval()
    pad = getattr(model.config, "pad_token_id", None) or 0
    seqs = job["input_ids"]
    width = max(len(s) for s in seqs)
    kwargs = {"input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
              "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])}
    if job["prompt_lengths"] is not None:
        kwargs["prompt_lengths"] = torch.tensor(job["prompt_lengths"])
    if job["token_type_ids"] is not None:
        kwargs["token_type_ids"] = torch.tensor([t + [0] * (width - len(t)) for t in job["token_type_ids"]])
    with torch.no_grad():
        logits = model(**kwargs).logits
    return {"class": f"{type(model).__module__}.{type(model).__name__}", "shape": list(logits.shape),
            "rewards": logits[:, 0].tolist()}


# Phase 1: vrm is not importable (transformers, torch and safetensors only).
blocker = BlockVrm()
sys.meta_path.insert(0, blocker)
sys.modules["vrm"] = None
import torch
from transformers import AutoModelForSequenceClassification

jobs = json.load(open(sys.argv[1]))
results = {"without_vrm": [run(job) for job in jobs["without_vrm"]]}
assert not vrm_modules(), vrm_modules()

# Phase 2: after `import vrm`, the Auto classes load vrm exports with no trust_remote_code.
sys.meta_path.remove(blocker)
del sys.modules["vrm"]
import vrm  # noqa: F401

results["with_vrm"] = [run(job) for job in jobs["with_vrm"]]
json.dump(results, open(sys.argv[1] + ".out", "w"))
"""


def job(folder: Path, encoded: list[EncodedSequence], plain: bool = False, remote: bool = False) -> dict:
    return {"folder": str(folder), "load": {"trust_remote_code": True} if remote else {},
            "input_ids": [e.input_ids for e in encoded],
            "prompt_lengths": None if plain else [e.prompt_length for e in encoded],
            "token_type_ids": None if plain or encoded[0].token_type_ids is None else
            [e.token_type_ids for e in encoded]}


def run_child(jobs: dict[str, list[dict]], tmp_path: Path) -> dict[str, list[dict]]:
    """Run CHILD on ``jobs`` in a fresh interpreter, from a folder outside the repository."""
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "child.py", str(spec)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=HANG_TIMEOUT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "jobs.json.out").read_text())


def test_exports_load_in_a_fresh_process_with_and_without_vrm(models, code_exports, gpt2_plain, tmp_path):
    bt_llama = models["bt-tiny_llama"]
    plain = export_checkpoint(bt_llama.best, bt_llama.root / "plain", plain=True)
    gpt2_folder, gpt2_encoded, gpt2_expected = gpt2_plain
    without_vrm = [job(code_exports[name], m.encoded, remote=True) for name, m in models.items()]
    without_vrm += [job(plain, bt_llama.encoded, plain=True), job(gpt2_folder, gpt2_encoded, plain=True)]
    with_vrm = [job(folder, m.encoded) for name, m in models.items() for folder in (m.export, code_exports[name])]
    results = run_child({"without_vrm": without_vrm, "with_vrm": with_vrm}, tmp_path)

    # Without vrm: the with-code folders through their remote code, the plain folders as transformers classes.
    expected = [m.expected for m in models.values()] + [bt_llama.expected, gpt2_expected]
    for result, want in zip(results["without_vrm"], expected, strict=True):
        assert result["shape"] == [len(PROMPTS), 1]
        assert result["rewards"] == pytest.approx(want, abs=ATOL)
    classes = [r["class"] for r in results["without_vrm"]]
    assert all(c.endswith("modeling_vrm.VRMForSequenceClassification") and not c.startswith("vrm.")
               for c in classes[:4]), classes
    assert [c.rsplit(".", 1)[1] for c in classes[4:]] == ["LlamaForSequenceClassification",
                                                          "GPT2ForSequenceClassification"]

    # With vrm imported: the registered class (not the remote code: no trust_remote_code was given).
    expected = [m.expected for m in models.values() for _ in range(2)]
    for result, want in zip(results["with_vrm"], expected, strict=True):
        assert result["class"] == "vrm.models.modeling_vrm.VRMForSequenceClassification"
        assert result["rewards"] == pytest.approx(want, abs=ATOL)

    # No exported tokenizer returns token types: a BERT-like model derives them from the prompt/response boundary.
    for folder in (gpt2_folder, plain, models["vrm-tiny_bert"].export):
        assert "token_type_ids" not in AutoTokenizer.from_pretrained(folder)("hi")

    # The plain folders also score through RewardScorer, padding with their config.pad_token_id.
    assert RewardScorer.from_pretrained(plain, batch_size=3).score(PROMPTS, RESPONSES) == pytest.approx(
        bt_llama.expected, abs=ATOL)
    assert RewardScorer.from_pretrained(gpt2_folder).score(PROMPTS, RESPONSES) == pytest.approx(gpt2_expected,
                                                                                                abs=ATOL)


def test_with_code_folder_holds_the_modeling_file_and_auto_map(code_exports):
    folder = code_exports["vrm-tiny_bert"]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["model_type"] == "vrm" and config["num_labels"] == 1
    for name in (MODELING_FILE, HEADS_FILE, POOLING_FILE):  # the modeling file and those it imports relatively
        source = (folder / name).read_text()
        imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
        assert imports <= {"__future__", "collections.abc", "inspect", "dataclasses", "warnings", "torch",
                           "torch.nn.functional", "torch.nn", "transformers", "transformers.modeling_outputs",
                           "." + Path(HEADS_FILE).stem, "." + Path(POOLING_FILE).stem}, imports


def test_manifest_hashes_every_file_and_the_card_has_config_and_metrics(models, tmp_path):
    m = models["vrm-tiny_bert"]
    manifest = verify_export(m.export)
    files = {p.name for p in m.export.iterdir()} - {MANIFEST}
    assert set(manifest["files"]) == files >= {"config.json", "model.safetensors", "tokenizer.json", MODEL_CARD}
    for package in ("torch", "transformers", "vrm", "safetensors", "pyro-ppl", "lightning"):
        assert manifest["packages"][package]
    card = (m.export / MODEL_CARD).read_text()
    assert "val/acc" in card and "num_objectives: 5" in card and "beta_w" in card

    # vrm-export from the command line reads the metrics from the run's CSV log (logger=csv).
    out = tmp_path / "cli_export"
    export_main([str(m.best), str(out)])
    card = (out / MODEL_CARD).read_text()
    assert "| val/acc |" in card and "Hydra" not in card  # a composed (not @hydra.main) run has no .hydra/
    assert json.loads((out / MANIFEST).read_text())["metrics"]["val/acc"] >= 0

    tampered = tmp_path / "tampered"
    shutil.copytree(m.export, tampered)
    (tampered / "config.json").write_text((tampered / "config.json").read_text() + " ")
    with pytest.raises(ExportError, match="config.json"):
        verify_export(tampered)


def test_plain_export_is_refused_where_the_head_cannot_pool_like_ours(models, tmp_path, capsys):
    with pytest.raises(ExportError, match=r"pooling='mean'.*bert.*BertForSequenceClassification"):
        export_checkpoint(models["bt-tiny_bert"].best, tmp_path / "no", plain=True)
    with pytest.raises(ExportError, match="BT models only"):
        export_checkpoint(models["vrm-tiny_llama"].best, tmp_path / "no", plain=True)
    assert not (tmp_path / "no").exists()
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(models["bt-tiny_bert"].best), str(tmp_path / "no"), "--plain"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "pooling='mean'" in err and "Traceback" not in err


def test_plain_export_is_refused_for_an_mlp_bt_head(tmp_path):
    """A BT head with a hidden layer (model.bt_head=mlp) is no ...ForSequenceClassification's one score matrix."""
    net, enc = random_model(["model=bt", "encoder=tiny_llama", "model.bt_head=mlp"], tmp_path)
    with pytest.raises(ExportError, match="bt_head='mlp'"):
        export_model(net, enc.tokenizer, tmp_path / "no", plain=True)
    assert not (tmp_path / "no").exists()


def test_pickle_weights_are_refused(models, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(models["bt-tiny_llama"].export, folder)
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        RewardScorer.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        RewardScorer.from_pretrained(folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        RewardScorer.from_pretrained(folder)


def test_export_never_replaces_a_folder_that_is_not_an_export(models, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a vrm export"):
        export_checkpoint(models["bt-tiny_llama"].best, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".precious")]  # no temporary left behind


def test_lora_encoder_is_merged_before_saving(tmp_path):
    peft = pytest.importorskip("peft")
    net, enc = random_model(["model=vrm", "encoder=tiny_bert"], tmp_path)
    lora = peft.LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    net.encoder = peft.get_peft_model(net.encoder, lora)
    expected = RewardScorer(net, enc.tokenizer).score(PROMPTS, RESPONSES)
    folder = export_model(net, enc.tokenizer, tmp_path / "merged")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora" in k or "base_model" in k]
    assert RewardScorer.from_pretrained(folder).score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=ATOL)


# -- vrm-score input errors -----------------------------------------------------------------------
@pytest.mark.parametrize("bad_line, named", [
    ('{"prompt": "hi"}', "line 2, field 'response': missing"),
    ('{"prompt": "hi", "response": 3}', "line 2, field 'response': must be a string"),
    ('{"prompt": [{"role": "user"}], "response": "x"}', "line 2, field 'prompt[0].content'"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "line 2, field 'messages'"),
    ('{"query": "no marker here"}', "line 2, field 'query'"),
    ('{"response": "x"}', "line 2, field 'prompt': missing"),
    ('{"prompt": "hi", ', "line 2: not valid JSON"),
    ('[1, 2]', "line 2: must be a JSON object"),
])
def test_vrm_score_names_the_bad_line_and_field(models, tmp_path, capsys, bad_line, named):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "ok", "response": "fine"}\n' + bad_line + "\n")
    with pytest.raises(SystemExit) as exit_info:
        score_main(["--model", str(models["vrm-tiny_bert"].export), "--input", str(src),
                    "--output", str(tmp_path / "out.jsonl"), "--no-progress"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


def test_an_interrupted_export_is_recovered_at_the_next_export(tmp_path):
    """A kill between moving the old export aside and moving the new one in loses nothing."""
    from vrm.scoring.export_folder import MANIFEST, recover_interrupted

    out = tmp_path / "export"
    old = tmp_path / ".export.old-123"
    old.mkdir()
    (old / MANIFEST).write_text("{}")
    stale = tmp_path / ".export.tmp-abc"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    recover_interrupted(out)
    assert (out / MANIFEST).is_file() and not old.exists() and not stale.exists()


# -- models from before the input contract --------------------------------------------------------
def old_export(net: VRMForSequenceClassification, tokenizer, folder: Path) -> Path:
    """A folder as vrm-export wrote it before the contract: no prompt_end_ids, the run's tokenizer as it was."""
    net.config.prompt_end_ids = None
    net.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_pre_contract_bert_export_scores_as_the_old_rule_did(tmp_path):
    net, enc = random_model(["model=vrm", "encoder=tiny_bert"], tmp_path)
    net.eval()
    folder = old_export(net, enc.tokenizer, tmp_path / "old")
    # The old rule by hand: the prompt with its special tokens, the response, [SEP]; token types 0 then 1.
    tok = enc.tokenizer
    expected = []
    for prompt, response in zip(PROMPTS[:2], RESPONSES[:2]):
        head = tok(prompt)["input_ids"]
        ids = head + tok(response, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
        types = torch.tensor([[0] * len(head) + [1] * (len(ids) - len(head))])
        with torch.no_grad():
            expected.append(float(net(torch.tensor([ids]), token_type_ids=types,
                                      prompt_lengths=torch.tensor([len(head)])).logits[0, 0]))
    assert RewardScorer.from_pretrained(folder).score(PROMPTS[:2], RESPONSES[:2]) == pytest.approx(expected, abs=ATOL)


def test_a_pre_contract_decoder_model_is_refused_with_the_reason(tmp_path):
    import bpe_tokenizers

    from vrm.data.contract import ContractError

    net, enc = random_model(["model=vrm", "encoder=tiny_llama"], tmp_path, tokenizer=bpe_tokenizers.gpt2_like())
    folder = old_export(net, enc.tokenizer, tmp_path / "old")
    with pytest.raises(ContractError, match="trained before the input contract"):
        RewardScorer.from_pretrained(folder)
    with pytest.raises(ExportError, match="trained before the input contract"):
        export_model(net, enc.tokenizer, tmp_path / "new")
