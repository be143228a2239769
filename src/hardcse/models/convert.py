"""Convert SimCSE-family checkpoints into sentence-transformers models with the right pooling.

Two input layouts are recognised:

* **training checkpoint** (``BertForCL`` / ``RobertaForCL`` of SimCSE, ClusterNS, HSimCSE and
  their forks): ``config.json`` plus ``pytorch_model.bin`` or ``model.safetensors`` whose
  backbone keys carry the base-model prefix (``bert.`` / ``roberta.``), next to the training
  MLP head ``mlp.dense.{weight,bias}`` and possibly ``lm_head.*`` (``--do_mlm``) or ClusterNS's
  ``cluster.centroid``;
* **Hugging Face export** (what SimCSE's ``simcse_to_huggingface.py`` writes): a plain
  ``BertModel`` / ``RobertaModel`` state dict without prefix, where the MLP head was renamed to
  ``pooler.dense.*``.

The output is ``Transformer -> Pooling`` (``cls`` by default: the raw last-layer first-token
vector, SimCSE's ``cls_before_pooler``, which is how unsupervised models are evaluated), plus,
with ``keep_mlp``, a ``Dense(d, d, tanh)`` holding the trained MLP (SimCSE's ``--pooler cls``,
how *supervised* checkpoints are evaluated). Only modules sentence-transformers ships are used,
so plain ``SentenceTransformer(path)`` and MTEB load the result with that pooling; without a
conversion they would fall back to mean pooling.

Weights are read safely: safetensors directly, ``.bin`` pickles only with
``torch.load(weights_only=True)``; a pickle holding anything but tensors is refused.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hardcse.errors import ConfigError, DataError
from hardcse.io import atomic_directory, atomic_write_json, atomic_write_text
from hardcse.models.loading import POOLING_MODES, check_pooling
from hardcse.safety import check_path_fits

#: Weight files looked for in a checkpoint directory, in order of preference.
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)

#: Files of a Hugging Face tokenizer that are copied to the output when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)

#: SimCSE poolers that need more than one hidden layer; sentence-transformers' Pooling cannot
#: express them, so a converted model could not be loaded natively with them.
UNSUPPORTED_POOLINGS = ("avg_first_last", "avg_top2")

#: The name of the conversion record written next to the model.
RECORD_FILE = "hardcse_conversion.json"

LAYOUT_TRAINING = "training-checkpoint"
LAYOUT_HF = "huggingface-export"


@dataclass
class ConversionReport:
    """What :func:`convert_checkpoint` did, also written to ``hardcse_conversion.json``."""

    source: str
    output: str
    layout: str
    model_type: str
    pooling: str
    kept_mlp: bool
    mlp_found: bool
    dropped: dict[str, list[str]] = field(default_factory=dict)
    max_seq_length: int | None = None

    def summary(self) -> str:
        """One line per fact, for the command line."""
        head = " -> Dense(tanh) [trained MLP]" if self.kept_mlp else ""
        lines = [f"layout: {self.layout} ({self.model_type})", f"modules: Transformer -> Pooling({self.pooling}){head}"]
        for group, keys in self.dropped.items():
            more = ", ..." if len(keys) > 3 else ""
            lines.append(f"dropped {group}: {len(keys)} tensor(s) ({', '.join(keys[:3])}{more})")
        return "\n".join(lines)


# -- reading ----------------------------------------------------------------------------------
def _weights_file(source: Path) -> tuple[Path, Path]:
    """Return (checkpoint directory, weights file) for a directory or a weights file."""
    if not source.exists():
        raise DataError(f"checkpoint {source} does not exist; point to a checkpoint directory or weights file.")
    if source.is_file():
        return source.parent, source
    for name in WEIGHT_FILES:
        if (source / name).is_file():
            return source, source / name
    raise DataError(
        f"no weights in {source}: expected one of {', '.join(WEIGHT_FILES[:2])} (or a sharded index); "
        "point to the checkpoint directory that holds them."
    )


def _load_bin(path: Path) -> dict[str, Tensor]:
    try:
        # weights_only: a checkpoint from the internet must never run code while it is read.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # a damaged or foreign file, not a pickle of objects
            raise DataError(
                f"{path} is not a readable PyTorch weights file (it is damaged or not a checkpoint at all)."
            ) from None
        raise DataError(
            f"{path} holds Python objects other than tensors, so it is not loaded (unpickling it could run code); "
            "re-save it as a plain state dict or safetensors from code you trust."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise DataError(f"{path} is not a readable PyTorch weights file ({str(err).splitlines()[0]}).") from None
    return _check_state(state, path)


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]}).") from None


def _check_state(state: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"{path} is not a state dict (a mapping of names to tensors); point to model weights.")
    return {str(k): v for k, v in state.items()}


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a weights file (``.safetensors``, ``.bin``/``.pt`` or a sharded ``*.index.json``) safely."""
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise DataError(f"{path} is not a readable shard index ({err}).") from None
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(path.parent / shard))
        return state
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _load_bin(path)


def _load_config(directory: Path):
    from transformers import AutoConfig

    if not (directory / "config.json").is_file():
        raise DataError(
            f"no config.json in {directory}; a SimCSE checkpoint directory holds config.json next to its weights."
        )
    try:
        return AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0]
        raise DataError(f"{directory / 'config.json'} is not a usable model config ({reason}).") from None


# -- layout -----------------------------------------------------------------------------------
def _backbone(config) -> torch.nn.Module:
    """A randomly initialised base model (no task head) for ``config``."""
    from transformers import AutoModel

    try:
        return AutoModel.from_config(config)
    except (ValueError, KeyError) as err:
        raise DataError(
            f"model type '{getattr(config, 'model_type', '?')}' has no Hugging Face base model ({err})."
        ) from None


def _is_buffer_key(key: str) -> bool:
    # Old transformers versions saved these buffers; current ones rebuild them.
    return key.endswith(("position_ids", "token_type_ids")) and "embeddings." in key


def split_checkpoint(
    state: dict[str, Tensor], expected: set[str], prefix: str
) -> tuple[str, dict[str, Tensor], dict[str, Tensor], dict[str, list[str]]]:
    """Separate backbone weights, the MLP head and everything else.

    Args:
        state: the checkpoint's state dict.
        expected: the keys of the target base model's state dict (with its pooler, if any).
        prefix: the base model prefix (``bert``, ``roberta``, ...).

    Returns:
        ``(layout, backbone, mlp, dropped)``: the backbone state without prefix (and without
        any pooler), the MLP as ``{"weight", "bias"}`` (empty if absent) and the dropped keys
        grouped by what they are.
    """
    dropped: dict[str, list[str]] = {}
    backbone: dict[str, Tensor] = {}
    mlp: dict[str, Tensor] = {}
    pre = f"{prefix}."
    if any(k.startswith(pre) for k in state):
        layout = LAYOUT_TRAINING
        for key, value in state.items():
            if key.startswith(pre):
                inner = key[len(pre) :]
                if _is_buffer_key(inner):
                    dropped.setdefault("stale buffers", []).append(key)
                elif inner.startswith("pooler."):
                    # BertForCL builds BERT without its pooler; one found here is the pretrained
                    # NSP pooler, never trained by SimCSE.
                    dropped.setdefault("backbone pooler", []).append(key)
                else:
                    backbone[inner] = value
            elif key.startswith("mlp.dense."):
                mlp[key[len("mlp.dense.") :]] = value
            elif key.startswith("lm_head."):
                dropped.setdefault("MLM head", []).append(key)
            elif key.startswith("cluster."):
                dropped.setdefault("ClusterNS centroids", []).append(key)
            else:
                dropped.setdefault("other", []).append(key)
    elif any(k in expected for k in state):
        layout = LAYOUT_HF
        for key, value in state.items():
            if key.startswith("pooler.dense."):
                # simcse_to_huggingface.py renamed mlp.* to pooler.*.
                mlp[key[len("pooler.dense.") :]] = value
            elif _is_buffer_key(key):
                dropped.setdefault("stale buffers", []).append(key)
            elif key in expected:
                backbone[key] = value
            else:
                dropped.setdefault("other", []).append(key)
    else:
        sample = ", ".join(sorted(state)[:3])
        raise DataError(
            f"unknown checkpoint layout: no '{pre}*' keys (SimCSE BertForCL/RobertaForCL) and no plain "
            f"{prefix} backbone keys (Hugging Face export); the first keys are {sample}."
        )
    if mlp and set(mlp) != {"weight", "bias"}:
        raise DataError(f"the MLP head in the checkpoint is incomplete (found {sorted(mlp)}, need weight and bias).")
    return layout, backbone, mlp, dropped


# -- writing ----------------------------------------------------------------------------------
def _copy_tokenizer(source_dir: Path, tokenizer: str | None, target: Path) -> None:
    if tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(tokenizer).save_pretrained(str(target))
        except (OSError, ValueError) as err:
            raise DataError(f"tokenizer '{tokenizer}' could not be loaded ({str(err).splitlines()[0]}).") from None
        return
    found = [name for name in TOKENIZER_FILES if (source_dir / name).is_file()]
    if not any(name in found for name in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")):
        raise DataError(
            f"no tokenizer files in {source_dir}; pass --tokenizer with the backbone's name or directory "
            "(for example bert-base-uncased or roberta-base)."
        )
    for name in found:
        shutil.copy2(source_dir / name, target / name)


def _add_model_kwargs(config_file: Path, model_kwargs: dict[str, Any]) -> None:
    """Record ``model_kwargs`` in the Transformer module's config; sentence-transformers passes them to
    ``from_pretrained`` when it loads the model (its loader reads this key)."""
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    config["model_kwargs"] = {**config.get("model_kwargs", {}), **model_kwargs}
    atomic_write_json(config_file, config)


def _readme(report: ConversionReport) -> str:
    head = (
        "The trained MLP head was kept as a Dense(tanh) module after the pooling (SimCSE's `--pooler cls`, "
        "the setting of supervised checkpoints)."
        if report.kept_mlp
        else (
            "The training-only MLP head was dropped: the embedding is the raw pooled vector "
            "(SimCSE's `--pooler cls_before_pooler`, the setting of unsupervised checkpoints)."
            if report.mlp_found
            else "The checkpoint had no MLP head."
        )
    )
    dropped = "".join(f"- {group}: {len(keys)} tensor(s)\n" for group, keys in report.dropped.items())
    return (
        "---\nlibrary_name: sentence-transformers\ntags:\n- sentence-transformers\n- sentence-similarity\n"
        "- simcse\n---\n\n"
        f"# Converted SimCSE-family checkpoint\n\nConverted by `hardcse convert` from `{report.source}` "
        f"({report.layout}, {report.model_type}).\n\n"
        f"Modules: Transformer -> Pooling(`{report.pooling}`)" + (" -> Dense(tanh)" if report.kept_mlp else "") + ".\n"
        f"{head}\n\n" + (f"Dropped from the checkpoint:\n\n{dropped}\n" if dropped else "") + "```python\n"
        "from sentence_transformers import SentenceTransformer\n\n"
        'model = SentenceTransformer("path/to/this/directory")\n'
        'embeddings = model.encode(["A sentence.", "Another one."])\n```\n\n'
        f"Details: `{RECORD_FILE}`.\n"
    )


def is_conversion(path: Path) -> bool:
    """True for a directory that ``hardcse convert`` wrote (its record next to ``modules.json``)."""
    return (path / RECORD_FILE).is_file() and (path / "modules.json").is_file()


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an ``OUTPUT`` that converting would destroy, touching nothing (one sentence).

    Never the working directory, its parents, home or ``/``; never the checkpoint or a directory
    holding it; an existing non-empty directory only with ``overwrite``, and only when it is a
    model that ``hardcse convert`` wrote (:func:`is_conversion`).
    """
    from hardcse.safety import brief_path, check_replace_target, protected_paths

    if output.exists() and not output.is_dir():
        raise ConfigError(f"output '{brief_path(output)}' is a file; choose a directory path for the model.")
    if output.resolve() in protected_paths():
        raise ConfigError(
            f"refusing to write the model to '{brief_path(output)}': it is the working directory, one of its parents, "
            "the home directory or '/'; choose a new directory such as ./converted."
        )
    if output.exists() and not overwrite:
        raise ConfigError(
            f"output {brief_path(output)} already exists; pass --overwrite to replace it or choose another path."
        )
    if output.is_dir() and any(output.iterdir()):
        check_replace_target(output, option="OUTPUT", what="conversion", own=is_conversion(output), inputs=inputs)
    for item in inputs:
        if output.resolve() == item or output.resolve() in item.parents:
            raise ConfigError(f"output {brief_path(output)} is the checkpoint directory itself; choose another path.")


def _refuse_prompt_model(directory: Path) -> None:
    """A prompt model's vector is the [MASK] state of its template, which a plain Transformer +
    Pooling model cannot express: refuse instead of writing a model that encodes differently."""
    from hardcse.models.prompt import hardcse_module_types

    if hardcse_module_types(directory):
        raise ConfigError(
            f"'{directory}' is a hardcse prompt model: its vector is the [MASK] state of its template, which a "
            "converted Transformer + Pooling model would drop; use the model as it is (hardcse evaluate loads it)."
        )


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    pooling: str = "cls",
    keep_mlp: bool = False,
    tokenizer: str | None = None,
    max_seq_length: int | None = None,
    overwrite: bool = False,
) -> ConversionReport:
    """Write the SimCSE-family checkpoint ``source`` as a sentence-transformers model at ``output``.

    Args:
        source: a checkpoint directory (``config.json`` + weights + tokenizer) or a weights file
            with ``config.json`` beside it.
        output: the directory to write; refused if it exists, unless ``overwrite``.
        pooling: ``cls`` (= ``cls_before_pooler``, default), ``mean`` (= ``avg``), ``max``,
            ``lasttoken`` or ``weightedmean``.
        keep_mlp: append the checkpoint's trained MLP as ``Dense(d, d, tanh)`` (supervised
            SimCSE is evaluated that way); by default it is dropped.
        tokenizer: a tokenizer name or directory, when ``source`` has no tokenizer files.
        max_seq_length: the saved truncation length; default the model's position limit, so
            nothing is cut (SimCSE's evaluation does not truncate).
        overwrite: replace an existing ``output``.

    Raises:
        DataError: missing or unreadable checkpoint, unknown layout, missing tokenizer.
        ConfigError: bad pooling, ``keep_mlp`` without an MLP head, an existing output.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling

    from hardcse.models.encoder import position_limit

    if pooling.strip().lower() in UNSUPPORTED_POOLINGS:
        raise ConfigError(
            f"pooling '{pooling}' averages two hidden layers, which sentence-transformers' Pooling cannot express; "
            "choose cls, mean, max, lasttoken or weightedmean."
        )
    pooling = check_pooling(pooling) or "cls"
    source = check_path_fits(source, "CHECKPOINT")
    output = check_path_fits(output, "OUTPUT")
    _refuse_prompt_model(source if source.is_dir() else source.parent)
    directory, weights = _weights_file(source)
    check_output(output, [directory.resolve(), weights.resolve()], overwrite)

    config = _load_config(directory)
    state = read_state_dict(weights)
    model = _backbone(config)
    expected = set(model.state_dict())
    layout, backbone_state, mlp, dropped = split_checkpoint(state, expected, model.base_model_prefix)
    if keep_mlp and not mlp:
        raise ConfigError(
            f"--keep-mlp: the checkpoint {weights} has no MLP head (mlp.dense.* or pooler.dense.*); convert without it."
        )

    has_pooler = getattr(model, "pooler", None) is not None
    if has_pooler:
        # The pooler (trained MLP or pretrained NSP pooler) is never part of the embedding here;
        # a backbone saved without it keeps anyone from using pooler_output by mistake.
        model.pooler = None
        expected = set(model.state_dict())
    missing = sorted(k for k in expected - set(backbone_state) if not _is_buffer_key(k))
    if missing:
        raise DataError(
            f"unknown checkpoint layout: {len(missing)} backbone weight(s) of the {config.model_type} config are "
            f"missing from {weights} (for example {', '.join(missing[:3])})."
        )
    result = model.load_state_dict(backbone_state, strict=False)
    if result.unexpected_keys:
        raise DataError(f"unexpected backbone weights in {weights}: {', '.join(result.unexpected_keys[:3])}.")
    config.architectures = [type(model).__name__]

    report = ConversionReport(
        source=str(source),
        output=str(output),
        layout=layout,
        model_type=str(config.model_type),
        pooling=pooling,
        kept_mlp=keep_mlp,
        mlp_found=bool(mlp),
        dropped={**({"MLP head": sorted(f"mlp.dense.{k}" for k in mlp)} if mlp and not keep_mlp else {}), **dropped},
    )

    with tempfile.TemporaryDirectory(prefix="hardcse-convert-") as tmp:
        backbone_dir = Path(tmp)
        model.save_pretrained(str(backbone_dir))
        _copy_tokenizer(directory, tokenizer, backbone_dir)
        # Without a pooler in the weights, loading must not build one (transformers would add a
        # random one and warn on every load): the saved module config carries the argument.
        model_kwargs = {"add_pooling_layer": False} if has_pooler else {}
        transformer = Transformer(str(backbone_dir), model_kwargs=dict(model_kwargs) or None)
        dim = transformer.get_embedding_dimension()
        modules: list[torch.nn.Module] = [transformer, Pooling(dim, pooling_mode=POOLING_MODES[pooling])]
        if keep_mlp:
            weight, bias = mlp["weight"], mlp["bias"]
            if tuple(weight.shape) != (dim, dim) or tuple(bias.shape) != (dim,):
                raise DataError(f"the MLP head in {weights} has shape {tuple(weight.shape)}, not ({dim}, {dim}).")
            modules.append(
                Dense(dim, dim, activation_function=torch.nn.Tanh(), init_weight=weight.float(), init_bias=bias.float())
            )
        st_model = SentenceTransformer(modules=modules, device="cpu")
        limit = max_seq_length if max_seq_length is not None else position_limit(st_model)
        if limit is not None:
            st_model.max_seq_length = limit
        report.max_seq_length = st_model.max_seq_length

        def write(target: Path) -> None:
            st_model.save(str(target), create_model_card=False)
            if model_kwargs:
                _add_model_kwargs(target / transformer.config_file_name, model_kwargs)
            atomic_write_text(target / "README.md", _readme(report))
            atomic_write_json(target / RECORD_FILE, asdict(report))

        atomic_directory(output, write)
    return report
