"""The one line rank 0 prints of NCCL's transport choice, from log lines in the form NCCL 2.28
writes them (INIT and GRAPH subsystems)."""
import os

from llmpy import nccl_log

HEAD = """gpu1:4242:4242 [0] NCCL INFO NCCL version 2.28.9+cuda13.0
gpu1:4242:4250 [0] NCCL INFO NET/IB : No device found.
gpu1:4242:4250 [0] NCCL INFO Using network {network}
gpu1:4242:4250 [0] NCCL INFO comm 0x55d0c0 rank 0 nRanks {ranks} nNodes {nodes} localRanks 2 localRank 0 MNNVL 0
gpu1:4242:4250 [0] NCCL INFO Pattern 4, crossNic 0, nChannels 16, bw 40.000000/40.000000, type {intra}/{inter}, sameChannels 1
"""


def test_one_node_over_nvlink():
    log = HEAD.format(network="Socket", ranks=2, nodes=1, intra="NVL", inter="PIX") + "".join(
        f"gpu1:4242:4250 [0] NCCL INFO Channel {c:02d}/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n" for c in range(4))
    assert nccl_log.summary(log, "/tmp/n.log") == (
        "NCCL 2.28.9+cuda13.0: 2 ranks on 1 node, network Socket, rank 0 reaches its peers via P2P/CUMEM; "
        "ring path NVL within a node (NCCL's log: /tmp/n.log)")


def test_two_nodes_name_the_network_and_each_transport_once():
    log = HEAD.format(network="IB", ranks=16, nodes=2, intra="NVL", inter="NET") + (
        "gpu1:4242:4250 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM\n"
        "gpu1:4242:4250 [0] NCCL INFO Channel 00/0 : 8[0] -> 0[0] [receive] via NET/IB/0/GDRDMA\n"
        "gpu1:4242:4250 [0] NCCL INFO Channel 01/0 : 8[0] -> 0[0] [receive] via NET/IB/1/GDRDMA\n")
    line = nccl_log.summary(log, "/tmp/n.log")
    assert "16 ranks on 2 nodes, network IB, rank 0 reaches its peers via NET/IB, P2P/CUMEM;" in line
    assert "ring path NVL within a node, NET between nodes" in line
    assert line.count("\n") == 0


def test_a_log_without_those_lines_says_so():
    line = nccl_log.summary("", "/tmp/n.log")
    assert "network unknown" in line and "via nothing logged" in line


def test_nccl_debug_set_by_the_user_is_left_alone(monkeypatch):
    monkeypatch.setattr(os, "environ", {"NCCL_DEBUG": "WARN"})
    assert nccl_log.log_to_file() is None and os.environ == {"NCCL_DEBUG": "WARN"}


def test_otherwise_nccl_logs_initialisation_to_a_file(monkeypatch):
    monkeypatch.setattr(os, "environ", {})
    path = nccl_log.log_to_file()
    assert os.environ == {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,GRAPH", "NCCL_DEBUG_FILE": path}
