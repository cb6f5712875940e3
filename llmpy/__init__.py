"""llmpy: GPT-2 training the llm.c way, in Python (NumPy on CPU, CuPy on GPU)."""
import sys
import traceback


class LlmpyError(Exception):
    """A user-facing error: bad input, bad file, bad flag. Its message is one line that names
    the file, flag or value at fault; train_gpt2.py prints it without a traceback."""


class JobError(LlmpyError):
    """An LlmpyError that every process of the job raised at once, having agreed on it
    (distributed.Comm.together): one process, the speaker, prints it; nobody needs aborting."""

    def __init__(self, message, speaker):
        super().__init__(message)
        self.speaker = speaker


class Stopped(BaseException):
    """SIGINT or SIGTERM: the run ends now, with this one line. Not an Exception, so that no
    check that recovers from errors (an agreed check, a fallback) takes it for one."""


def run_main(main):
    """Run a command-line program's main(): bad input (LlmpyError) ends it with its one-line
    message and exit status 1, never with a traceback. In an MPI job of several processes any
    failure of this one (an error, an exception, a signal) also ends the others, which would
    otherwise wait for it forever; JobError needs no such abort: every process stops with it."""
    from llmpy import distributed
    try:
        main()
    except JobError as e:
        sys.exit(f"error: {e}" if e.speaker else 1)
    except (LlmpyError, Stopped) as e:
        print(f"error: {distributed.rank_prefix()}{e}", file=sys.stderr)
        if distributed.several_processes():
            distributed.abort()
        sys.exit(1)
    except SystemExit:
        raise
    except BaseException:
        if not distributed.several_processes():
            raise
        print(f"{distributed.rank_prefix()}{traceback.format_exc()}", file=sys.stderr, end="")
        distributed.abort()
