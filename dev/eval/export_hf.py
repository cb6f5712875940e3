"""Export an llm.c model file (fp32 or bf16) as a Hugging Face transformers GPT2LMHeadModel folder
(config.json + model.safetensors), e.g. to run lm-evaluation-harness on it.

    python dev/eval/export_hf.py -i log124M/model_00010000.bin -o gpt2_124M_hf

The weights are written in fp32 (a bf16 file's values are exactly representable); load them in
bf16 with transformers' `dtype=torch.bfloat16` (lm-eval: `--model_args dtype=bfloat16`).
The folder also gets GPT-2's tokenizer (vocab.json, merges.txt, built from llmpy's BPE ranks,
no download), so transformers and lm-eval find everything in it without the internet.
"""
import argparse

from llmpy import run_main
from llmpy.checkpoint import read_model
from llmpy.hf import export_hf


def main(argv=None):
    p = argparse.ArgumentParser(description="llm.c model file -> Hugging Face GPT2LMHeadModel folder")
    p.add_argument("-i", "--input", required=True, help="llm.c model file (version 3 fp32 or 5 bf16)")
    p.add_argument("-o", "--output", required=True, help="output folder (created; existing files are replaced)")
    args = p.parse_args(argv)
    cfg, params = read_model(args.input)
    out = export_hf(cfg, params, args.output)
    print(f"exported {args.input} (L={cfg.num_layers} C={cfg.channels} NH={cfg.num_heads} "
          f"maxT={cfg.max_seq_len} V={cfg.vocab_size}, {params.size:,} params) to {out}/")


if __name__ == "__main__":
    run_main(main)
