"""Peer reproductions: the released SEARLE, LinCIR and Pic2Word weights run through zscir (docs/PEERS.md)."""

from zscir.methods.peers.checkpoint import PeerCheckpointError, load_phi, read_checkpoint
from zscir.methods.peers.composer import PeerComposer
from zscir.methods.peers.specs import PEERS, PeerSpec

__all__ = ["PEERS", "PeerCheckpointError", "PeerComposer", "PeerSpec", "load_phi", "read_checkpoint"]
