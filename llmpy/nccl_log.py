"""NCCL's choice of transport in one line: rank 0 has NCCL write its INFO log (initialisation
and topology only) to a file, and after the first collective, which makes NCCL connect the
ranks, the line says what the log names: NCCL's version, ranks and nodes, the network NCCL
took between nodes (IB, Socket), how rank 0 reaches its peers (P2P: NVLink or PCIe; SHM: host
memory; NET: the network) and the ring's path type within and between nodes (NVL: NVLink;
PIX, PXB, PHB: PCIe; SYS: across CPU sockets; NET: the network)."""
import os
import re
import tempfile


def log_to_file():
    """Where NCCL will write rank 0's log, set in the environment before NCCL starts; None
    where the user set NCCL_DEBUG (NCCL then reports itself, as asked)."""
    if "NCCL_DEBUG" in os.environ:
        return None
    path = os.path.join(tempfile.gettempdir(), f"llmpy_nccl_{os.getpid()}.log")
    os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,GRAPH", NCCL_DEBUG_FILE=path)
    return path


def summary(text, path):
    """One line from NCCL's INFO log `text` (written at `path`)."""
    def first(pattern):
        m = re.search(pattern, text)
        return m.groups() if m else None

    version = first(r"NCCL INFO NCCL version (\S+)")
    parts = [f"NCCL {version[0] if version else '(version not in its log)'}:"]
    sizes = first(r"nRanks (\d+) nNodes (\d+)")
    if sizes:
        parts.append(f"{sizes[0]} ranks on {sizes[1]} node{'s' * (sizes[1] != '1')},")
    network = first(r"Using network (\S+)")
    parts.append(f"network {network[0] if network else 'unknown'},")
    links = sorted({"/".join(via.split("/")[:2]) for via in re.findall(r" via (\S+)", text)})
    parts.append(f"rank 0 reaches its peers via {', '.join(links) or 'nothing logged'}")
    paths = first(r"Pattern \d+, .* type (\S+)/(\S+),")
    if paths:
        between = f", {paths[1]} between nodes" if sizes and sizes[1] != "1" else ""
        parts[-1] += f"; ring path {paths[0]} within a node{between}"
    return " ".join(parts) + f" (NCCL's log: {path})"
