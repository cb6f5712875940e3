"""What the command-line programs (train_gpt2.py, sample_gpt2.py) share about their flags."""
import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse whose errors (an unknown flag, a value of the wrong type) are one line, as
    every other bad input is, instead of the usage block and the message."""

    def error(self, message):
        sys.exit(f"{self.prog}: error: {message} (see --help)")
