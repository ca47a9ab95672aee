"""Validation at the door (issue 11): SamplingParams, ModelConfig.from_hf and model folders reject a bad
value where it is given, with a message naming the field, the value and what is allowed; nothing
bad gets far enough to fail inside the engine. The command line's side is in test_cli.py."""
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.config import MAX_SEED, MAX_TOP_K, MIN_TEMPERATURE, ModelConfig, SamplingParams
from course_lib.models import load_model, resolve_model
from course_lib.models.registry import KNOWN_MODELS, check_tokenizer_files

SMOL_HF = KNOWN_MODELS["smollm2-135m"][0]


# --- SamplingParams: the reproducers ----------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,message", [
    (dict(top_k=2**63), ValueError, rf"top_k must be -1 \(disabled\) or an integer >= 1 \(at most {MAX_TOP_K}"),
    (dict(top_k=MAX_TOP_K + 1), ValueError, "top_k must be"),
    (dict(seed=1.5), TypeError,
     r"seed must be None or an integer in \[0, 2\*\*64 - 1\], got 1.5 of type float"),
    (dict(seed=2**64), ValueError, r"seed must be .*got 18446744073709551616$"),
    (dict(seed=-1), ValueError, "seed must be"),
    (dict(seed=True), TypeError, "seed must be"),
    (dict(temperature=math.inf), ValueError,
     r"temperature must be a number >= 0 \(0 means greedy\) and finite, got inf"),
    (dict(temperature="0.5"), TypeError, "temperature must be a number >= 0.*got '0.5' of type str"),
    (dict(temperature=10**400), ValueError, "temperature must be .*too large for a float"),
    (dict(n=True), TypeError, "n must be an integer >= 1, got True of type bool"),
    (dict(n=2.0), TypeError, "n must be an integer >= 1, got 2.0 of type float"),
    (dict(max_tokens=True), TypeError, "max_tokens must be an integer >= 1"),
    (dict(top_p="0.5"), TypeError, r"top_p must be a number in \(0, 1\], got '0.5' of type str"),
    (dict(top_p=None), TypeError, r"top_p must be a number in \(0, 1\], got None"),
    (dict(top_p=1.5), ValueError, r"^top_p must be in \(0, 1\], got 1.5$"),
    (dict(top_p=math.nan), ValueError, r"top_p must be in \(0, 1\], got nan"),
    (dict(min_p=True), TypeError, r"min_p must be a number in \[0, 1\]"),
    (dict(min_p=1.01), ValueError, r"min_p must be in \[0, 1\], got 1.01"),
    (dict(logprobs="yes"), TypeError, "logprobs must be None, True/False or an integer >= 0, got 'yes'"),
    (dict(logprobs=-1), ValueError, "logprobs must be None, True/False or an integer >= 0, got -1"),
    (dict(ignore_eos="no"), TypeError, "ignore_eos must be True or False, got 'no' of type str"),
    (dict(ignore_eos=1), TypeError, "ignore_eos must be True or False"),
    (dict(stop_token_ids=7), TypeError,
     r"stop_token_ids must be None or a list of token ids \(integers >= 0\), got 7"),
    (dict(stop_token_ids="12"), TypeError, "stop_token_ids must be .*got '12' of type str"),
    (dict(stop_token_ids=[1, 2.0]), TypeError, r"stop_token_ids must be .*\(element 2.0 of type float\)"),
    (dict(stop_token_ids=[True]), TypeError, "stop_token_ids must be .*element True of type bool"),
    (dict(stop_token_ids=[3, -1]), ValueError, r"stop_token_ids must be .*got \[3, -1\]$"),
    (dict(prompt_logprobs=-2), ValueError, "prompt_logprobs must be None, True/False or an integer >= 0, got -2"),
    (dict(presence_penalty=2.5), ValueError, r"presence_penalty must be in \[-2, 2\], got 2.5"),
    (dict(frequency_penalty="1"), TypeError, r"frequency_penalty must be a number in \[-2, 2\], got '1'"),
    (dict(repetition_penalty=0), ValueError, r"repetition_penalty must be a number > 0 \(1 means no penalty\)"),
    (dict(repetition_penalty=math.inf), ValueError, "repetition_penalty must be .* and finite, got inf"),
    (dict(min_tokens=17), ValueError, r"min_tokens must be an integer in \[0, max_tokens=16\], got 17"),
    (dict(min_tokens=-1), ValueError, "min_tokens must be"),
    (dict(stop=5), TypeError, "stop must be None, a non-empty string or a list of non-empty strings, got 5"),
    (dict(stop=["ok", ""]), ValueError, r"stop must be .*got \['ok', ''\]"),
    (dict(stop=["ok", 3]), TypeError, r"stop must be .*\(element 3 of type int\)"),
    (dict(include_stop_str_in_output=1), TypeError, "include_stop_str_in_output must be True or False"),
])
def test_sampling_params_rejects(kwargs, error, message):
    with pytest.raises(error, match=message):
        SamplingParams(**kwargs)


def test_sampling_params_normalises():
    p = SamplingParams(n=np.int64(2), temperature=1, top_p=1, top_k=0, min_p=0, stop_token_ids=None,
                       seed=MAX_SEED, logprobs=None)
    assert (p.n, p.top_k, p.stop_token_ids, p.seed, p.logprobs) == (2, -1, [], MAX_SEED, None)
    assert type(p.n) is int and type(p.temperature) is float and type(p.top_p) is float
    assert SamplingParams(stop_token_ids=(5, np.int32(6))).stop_token_ids == [5, 6]
    assert SamplingParams(top_k=MAX_TOP_K).top_k == MAX_TOP_K          # above any vocabulary: no filter
    assert SamplingParams(logprobs=True).logprobs == 0 and SamplingParams(logprobs=False).logprobs is None
    assert SamplingParams(logprobs=5).logprobs == 5 and SamplingParams(prompt_logprobs=0).prompt_logprobs == 0
    assert SamplingParams(stop="###").stop == ["###"] and SamplingParams(stop=None).stop == []
    assert SamplingParams(min_tokens=16).min_tokens == 16
    assert SamplingParams(seed=0).seed == 0


def test_a_long_bad_value_gives_a_short_message():
    with pytest.raises(TypeError) as e:
        SamplingParams(stop_token_ids=["x"] * 10**5)
    assert len(str(e.value)) < 300


@pytest.mark.parametrize("t", [1e-39, 1e-38, 5e-3, 5e-324])
def test_tiny_temperature_is_raised_with_a_warning(t):
    with pytest.warns(UserWarning, match=rf"temperature={t!r} is below {MIN_TEMPERATURE}") as record:
        p = SamplingParams(temperature=t)
    assert p.temperature == MIN_TEMPERATURE and not p.greedy
    assert record[0].filename == __file__           # the warning points at the caller's line
    # What the clamp is for: the sampler's probabilities stay finite (1e-38 gave all-NaN, token 0).
    from course_lib.layers.sampler import apply_filters
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0)) * 30
    probs = apply_filters(logits, [p, p])
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(2))


def test_temperature_zero_and_the_threshold_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SamplingParams(temperature=0).greedy
        assert SamplingParams(temperature=MIN_TEMPERATURE).temperature == MIN_TEMPERATURE


def test_check_vocab():
    SamplingParams(stop_token_ids=[0, 49151]).check_vocab(49152)
    with pytest.raises(ValueError, match=r"^stop_token_ids must be token ids in \[0, 49152\), "
                                         r"got \[49152, 1000000000\]$"):
        SamplingParams(stop_token_ids=[1, 49152, 10**9]).check_vocab(49152)


# --- SamplingParams: arbitrary values at every field ---------------------------------------------------

FIELDS = ("n", "temperature", "top_p", "top_k", "min_p", "max_tokens", "ignore_eos", "stop_token_ids",
          "seed", "logprobs", "prompt_logprobs", "presence_penalty", "frequency_penalty", "repetition_penalty",
          "min_tokens", "stop", "include_stop_str_in_output")
SCALARS = st.one_of(
    st.integers(-3, 3), st.integers(), st.integers(-2**70, 2**70), st.sampled_from([2**31 - 1, 2**31, 2**63,
                                                                                    2**64 - 1, 2**64]),
    st.floats(), st.floats(0, 1), st.floats(0, 1e-30), st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.booleans(), st.text(max_size=5), st.none(), st.builds(np.int64, st.integers(-2**63, 2**63 - 1)),
    st.builds(np.float32, st.floats(0, 1, width=32)))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.lists(st.integers(0, 10**6), max_size=4),
                   st.tuples(st.integers(0, 100)), st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))


def assert_documented(p: SamplingParams) -> None:
    """Every field of a SamplingParams that was accepted has its documented type and range."""
    assert type(p.n) is int and p.n >= 1
    assert type(p.temperature) is float and (p.temperature == 0 or MIN_TEMPERATURE <= p.temperature < math.inf)
    assert type(p.top_p) is float and 0 < p.top_p <= 1
    assert type(p.top_k) is int and (p.top_k == -1 or 1 <= p.top_k <= MAX_TOP_K)
    assert type(p.min_p) is float and 0 <= p.min_p <= 1
    assert type(p.max_tokens) is int and p.max_tokens >= 1
    assert type(p.ignore_eos) is bool
    assert type(p.stop_token_ids) is list and all(type(t) is int and t >= 0 for t in p.stop_token_ids)
    assert p.seed is None or (type(p.seed) is int and 0 <= p.seed <= MAX_SEED)
    for k in (p.logprobs, p.prompt_logprobs):
        assert k is None or (type(k) is int and k >= 0)
    assert type(p.presence_penalty) is float and -2 <= p.presence_penalty <= 2
    assert type(p.frequency_penalty) is float and -2 <= p.frequency_penalty <= 2
    assert type(p.repetition_penalty) is float and 0 < p.repetition_penalty < math.inf
    assert type(p.min_tokens) is int and 0 <= p.min_tokens <= p.max_tokens
    assert type(p.stop) is list and all(type(x) is str and x for x in p.stop)
    assert type(p.include_stop_str_in_output) is bool


def build(kwargs: dict):
    """(SamplingParams or None, the error or None); a tiny-temperature warning must name its field."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            p, err = SamplingParams(**kwargs), None
        except (TypeError, ValueError) as e:
            p, err = None, e
    assert all(str(w.message).startswith("temperature=") for w in record), [str(w.message) for w in record]
    return p, err


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_of_one_field(field, value):
    p, err = build({field: value})
    if err is not None:
        assert str(err).startswith(f"{field} must be "), str(err)
        return
    assert_documented(p)
    got = getattr(p, field)            # accepted values are kept, up to the documented normalisations
    if field == "top_k" and value == 0:
        assert got == -1
    elif field == "temperature" and 0 < value < MIN_TEMPERATURE:
        assert got == MIN_TEMPERATURE
    elif field == "stop_token_ids":
        assert got == ([] if value is None else list(value))
    elif field in ("logprobs", "prompt_logprobs") and (value is None or isinstance(value, bool)):
        assert got == {None: None, False: None, True: 0}[value]
    elif field == "stop":
        assert got == ([] if value is None else [value] if isinstance(value, str) else list(value))
    elif field in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"):
        assert got == float(value) or (value != value and got != got)
    else:
        assert got == value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kwargs=st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=2, max_size=5))
def test_any_values_of_several_fields(kwargs):
    p, err = build(kwargs)
    if err is not None:
        field = str(err).split(" ", 1)[0]
        assert field in kwargs and str(err).startswith(f"{field} must be "), str(err)
    else:
        assert_documented(p)


# --- ModelConfig.from_hf ------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["num_attention_heads", "hidden_size", "vocab_size", "intermediate_size",
                                     "num_hidden_layers"])
def test_from_hf_names_a_missing_field(missing):
    cfg = {k: v for k, v in SMOL_HF.items() if k != missing}
    with pytest.raises(ValueError, match=rf"^config.json \(model_type 'llama'\) is missing '{missing}', "
                                         r"which is required \(an integer\)$"):
        ModelConfig.from_hf(cfg)
    with pytest.raises(ValueError, match=f"is missing '{missing}'"):
        ModelConfig.from_hf(dict(cfg, **{missing: None}))          # JSON null is as good as absent


@pytest.mark.parametrize("key,value,message", [
    ("num_attention_heads", "9",
     r"num_attention_heads in config.json \(model_type 'llama'\) must be an integer, got '9'"),
    ("hidden_size", 576.0, "hidden_size in .* must be an integer, got 576.0"),
    ("num_hidden_layers", True, "num_hidden_layers in .* must be an integer, got True"),
    ("num_key_value_heads", [3], "num_key_value_heads in .* must be an integer"),
    ("rms_norm_eps", "1e-5", "rms_norm_eps in .* must be a number"),
    ("rope_theta", None, None),                                             # null: the default
    ("rope_scaling", "llama3", "rope_scaling in .* must be a JSON object"),
    ("tie_word_embeddings", "true", "tie_word_embeddings in .* must be true or false"),
    ("eos_token_id", ["2"], "eos_token_id in .* must be an integer or a list of integers"),
    ("eos_token_id", "2", "eos_token_id in .* must be an integer or a list of integers"),
    ("num_attention_heads", 0,
     r"num_attention_heads in config.json \(model_type 'llama'\) must be a positive integer, got 0"),
    ("num_key_value_heads", 2,
     r"num_kv_heads must be a divisor of num_heads=9, got 2 \(from config.json \(model_type 'llama'\)\)"),
    ("model_type", "gpt2", r"model_type must be one of \['llama', 'qwen2', 'qwen3'\], got 'gpt2'"),
    ("model_type", ["llama"], "model_type must be one of"),
])
def test_from_hf_names_a_wrong_type(key, value, message):
    cfg = dict(SMOL_HF, **{key: value})
    if message is None:
        assert ModelConfig.from_hf(cfg).rope_theta == 10000.0
        return
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(cfg)


def test_from_hf_rejects_a_non_object():
    with pytest.raises(ValueError, match=r"x/config.json must hold a JSON object, got \[1, 2\]"):
        ModelConfig.from_hf([1, 2], source="x/config.json")


def test_from_hf_still_reads_the_registry():
    for hf_cfg, _, _ in KNOWN_MODELS.values():
        ModelConfig.from_hf(hf_cfg)


# --- model folders ------------------------------------------------------------------------------------

def write_config(folder, cfg=SMOL_HF):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def weights_file():
    return resolve_model("smollm2-135m").folder + "/model.safetensors"


def test_folder_with_only_config_json(tmp_path):
    folder = write_config(tmp_path / "m")
    for call in (resolve_model, load_model):
        with pytest.raises(FileNotFoundError, match=re.escape(f"no *.safetensors in {folder}")):
            call(str(folder))
    assert resolve_model(str(folder), need_weights=False).config.num_heads == 9   # the shape alone is fine
    with pytest.raises(FileNotFoundError, match=re.escape(f"no tokenizer files in {folder}")):
        check_tokenizer_files(folder)


def test_folder_without_tokenizer(tmp_path, weights_file):
    folder = write_config(tmp_path / "m")
    (folder / "model.safetensors").symlink_to(weights_file)
    assert resolve_model(str(folder)).folder == str(folder)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no tokenizer files in {folder} (looked for "
                                                          "tokenizer.json")):
        check_tokenizer_files(folder)
    check_tokenizer_files(resolve_model("smollm2-135m").folder)


def test_config_json_missing_a_field_names_the_file(tmp_path):
    cfg = {k: v for k, v in SMOL_HF.items() if k != "num_attention_heads"}
    folder = write_config(tmp_path / "m", cfg)
    with pytest.raises(ValueError, match=re.escape(f"{folder}/config.json (model_type 'llama') is missing "
                                                   "'num_attention_heads'")):
        load_model(str(folder))


def test_config_json_that_is_not_json(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"{folder}/config.json is not valid JSON")):
        resolve_model(str(folder))


def test_sharded_index_naming_a_missing_file(tmp_path):
    folder = write_config(tmp_path / "m")
    index = {"weight_map": {"a": "part-1.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="names files missing from .*part-1.safetensors"):
        resolve_model(str(folder))


def test_unreadable_safetensors(tmp_path):
    tiny = dict(SMOL_HF, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    folder = write_config(tmp_path / "m", tiny)
    (folder / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        load_model(str(folder))


@pytest.mark.parametrize("name", ["./no_such_dir", "/no/such/dir", "~/no_such_dir_x", "a/b/c", "../x"])
def test_missing_folder_is_not_a_hub_id(name):
    for call in (resolve_model, load_model):
        with pytest.raises(ValueError, match=rf"^model folder {re.escape(repr(name))} does not exist "
                                             r"\(no such folder\); model must be one of"):
            call(name)


def test_a_file_is_not_a_folder(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        resolve_model(str(f))


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen3-0.6B", "a_b/c.d-1"])
def test_hub_ids_still_go_to_the_hub(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=rf"model '{re.escape(name)}' is not a local folder, so it would be "
                                         "downloaded from the hub, but HF_HUB_OFFLINE is set"):
        resolve_model(name)


def test_hub_failure_is_one_line(monkeypatch):
    import huggingface_hub

    def fail(*args, **kwargs):
        raise OSError("404 Client Error\nRepository Not Found for url: ...")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(ValueError, match=r"^model 'no-one/nothing': the hub download failed "
                                         r"\(OSError: 404 Client Error\)$"):
        resolve_model("no-one/nothing")
