"""llmpy: GPT-2 training the llm.c way, in Python (NumPy on CPU, CuPy on GPU)."""


class LlmpyError(Exception):
    """A user-facing error: bad input, bad file, bad flag. Its message is one line that names
    the file, flag or value at fault; train_gpt2.py prints it without a traceback."""
