"""llmpy: GPT-2 training the llm.c way, in Python (NumPy on CPU, CuPy on GPU)."""
import sys


class LlmpyError(Exception):
    """A user-facing error: bad input, bad file, bad flag. Its message is one line that names
    the file, flag or value at fault; train_gpt2.py prints it without a traceback."""


def run_main(main):
    """Run a command-line program's main(): bad input (LlmpyError) ends it with its one-line
    message and exit status 1, never with a traceback."""
    try:
        main()
    except LlmpyError as e:
        sys.exit(f"error: {e}")
