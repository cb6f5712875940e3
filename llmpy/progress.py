"""Progress bars for long work (val loss, HellaSwag, data preparation, export): tqdm's, on
stderr, only where stderr is a terminal and only in the process that speaks (rank 0), so logs,
pipes and the other ranks stay clean."""
import sys


def progress_bar(iterable, total=None, desc=None, unit="it", show=True):
    """`iterable`, with a bar where show and stderr is a terminal."""
    if not (show and sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class _Silent:
    def update(self, n=1):
        pass

    def set_description_str(self, desc):
        pass

    def close(self):
        pass


def counter(total=None, desc=None, unit="it", show=True):
    """A bar advanced by update(n) (tokens written, bytes exported), or a silent stand-in."""
    if not (show and sys.stderr.isatty()):
        return _Silent()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True)
