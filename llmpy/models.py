"""-e: the model a program starts from, by what the user names: a descriptor for a fresh model,
OpenAI's GPT-2 by name, a Hugging Face GPT-2 folder, a train_gpt2.py output folder (its newest
complete checkpoint), or an llm.c model file."""
import os

from llmpy import LlmpyError
from llmpy.checkpoint import check_finite, checkpoint_paths, latest_checkpoint_step, named_params, read_model
from llmpy.config import DESCRIPTORS, from_descriptor
from llmpy.hf import HF_MODELS, load_hf_gpt2

MODEL_HELP = ("llm.c model file, a descriptor for a fresh model (" + ", ".join(DESCRIPTORS) + "), OpenAI's "
              "GPT-2 from the Hugging Face cache (" + ", ".join(HF_MODELS) + "), a Hugging Face GPT-2 folder, "
              "or a train_gpt2.py -o folder (its newest complete checkpoint)")
HF_DIR_HELP = "with -e gpt2*: folder with its config.json and model.safetensors (none: the Hugging Face cache)"


def load_model_params(spec, hf_dir=None):
    """(GPT2Config, flat fp32 params) of what -e names; params is None for a descriptor, whose
    fresh initialisation is the caller's (it owns the seed). A folder with a config.json is a
    Hugging Face GPT-2, any other folder a train_gpt2.py output folder."""
    if hf_dir is not None and spec not in HF_MODELS:
        raise LlmpyError(f"--hf_dir goes with -e {'|'.join(HF_MODELS)}, not -e {spec}")
    if spec in DESCRIPTORS:
        return from_descriptor(spec), None
    if spec in HF_MODELS or os.path.isfile(os.path.join(spec, "config.json")):
        cfg, params = load_hf_gpt2(spec, hf_dir)
        check_finite(f"-e {spec}", named_params(cfg, params))
        return cfg, params
    if os.path.isdir(spec):
        return read_model(newest_checkpoint_model(spec))
    if not os.path.isfile(spec):
        raise LlmpyError(f"-e {spec}: no such model file or folder, and not a model descriptor ({', '.join(DESCRIPTORS)}) "
                         f"or Hugging Face GPT-2 ({', '.join(HF_MODELS)})")
    return read_model(spec)


def newest_checkpoint_model(out_dir):
    """The model file of the newest complete checkpoint (one with its DONE marker) in out_dir."""
    step = latest_checkpoint_step(out_dir)
    if step is None:
        raise LlmpyError(f"-e {out_dir}: no complete checkpoint in this folder (a DONE_<step> file beside "
                         "model_<step>.bin, written by train_gpt2.py -o -n), and no config.json of a "
                         "Hugging Face GPT-2")
    return checkpoint_paths(out_dir, step, rank=0)[0]
