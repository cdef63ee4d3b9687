"""AES-128-CBC over many independent chains of 16-byte blocks, each chain from the same IV: what 'cbcs' (each
subsample's encrypted blocks of the 1:9 pattern, or an audio sample's blocks) and SAMPLE-AES (each NAL unit, each
AAC frame) both need. A cipher context costs more than a chain, and CBC is serial within a chain: Python work is per
chain or per block position, never per block (``cbc_chains``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
CONTEXTS_KEPT = 16  # keys whose AES contexts a thread keeps
# cbc_chains' cost model (µs on this kind of machine): one shared-CBC update per long chain, one ECB step per
# block position for the short ones
_CHAIN_COST, _STEP_COST = 1.5, 7


def encrypt_blocks(buf: np.ndarray, block_at: np.ndarray, n_blocks: np.ndarray, key: bytes, iv: bytes) -> None:
    """AES-128-CBC in place over the 16-byte blocks at ``block_at`` of ``buf``: consecutive runs of ``n_blocks``
    blocks are separate chains, each from ``iv``."""
    if not len(block_at):
        return
    # buf[i:i + 16] as one 16-byte item per i: gathering and scattering whole items is a memcpy each
    items = np.ndarray(shape=(len(buf) - BLOCK + 1,), dtype=f"V{BLOCK}", buffer=buf, strides=(1,))
    plain = items[block_at].view(np.uint8).reshape(-1, BLOCK)
    items[block_at] = cbc_chains(plain, n_blocks[n_blocks > 0], key, iv).view(f"V{BLOCK}").ravel()


def cbc_chains(plain: np.ndarray, lengths: np.ndarray, key: bytes, iv: bytes) -> np.ndarray:
    """AES-128-CBC of the (n, 16) blocks ``plain`` (C-contiguous, overwritten) as separate chains, each from ``iv``:
    chain j is the next ``lengths[j]`` (> 0) rows. Python work is per chain or per block position, never per block:
    the longest chains run through one CBC context, and the many short ones advance together, one ECB call per
    block position; the split comes from a cost model (``_CHAIN_COST``, ``_STEP_COST``)."""
    out = np.empty((len(plain) + 1, BLOCK), dtype=np.uint8)  # a spare block: update_into wants the room
    first = np.cumsum(lengths) - lengths
    order = np.argsort(-lengths, kind="stable")
    cost = _CHAIN_COST * np.arange(len(order) + 1) + _STEP_COST * np.append(lengths[order], 0)
    split = int(np.argmin(cost))
    if split:
        chains = np.sort(order[:split])
        _one_context(plain, out, first[chains], first[chains] + lengths[chains], key, iv)
    if split < len(order):
        _by_position(plain, out, first[order[split:]], lengths[order[split:]], key, iv)
    return out[:-1]


def _one_context(plain: np.ndarray, out: np.ndarray, starts: np.ndarray, ends: np.ndarray, key: bytes,
                 iv: bytes) -> None:
    """Chains of rows [starts[j], ends[j]) through one CBC context: each chain's first block is pre-XORed with the
    IV and the previous chain's last ciphertext, which CBC XORs in, so that every chain starts from the IV."""
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    src, dst = memoryview(plain).cast("B"), memoryview(out).cast("B")
    iv_value, last = int.from_bytes(iv, "big"), 0
    for a, b in zip((starts * BLOCK).tolist(), (ends * BLOCK).tolist()):
        if last:
            restart = int.from_bytes(src[a:a + BLOCK], "big") ^ int.from_bytes(dst[last - BLOCK:last], "big")
            src[a:a + BLOCK] = (restart ^ iv_value).to_bytes(BLOCK, "big")
        encryptor.update_into(src[a:b], dst[a:])
        last = b


def _by_position(plain: np.ndarray, out: np.ndarray, starts: np.ndarray, lengths: np.ndarray, key: bytes,
                 iv: bytes) -> None:
    """Chains (longest first) advanced together: block k of every chain longer than k in one ECB call, since CBC is
    E(P ^ previous ciphertext). The blocks are laid out step by step first (step k: block k of each chain still
    going, in chain order), so that each step reads and writes one contiguous run."""
    going = np.searchsorted(-lengths, -np.arange(int(lengths[0])), "left")  # chains longer than k
    step_at = np.cumsum(going) - going
    k = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # block k of its chain
    rank = np.repeat(np.arange(len(lengths)), lengths)
    rows = np.empty(len(k), dtype=np.int64)
    rows[step_at[k] + rank] = starts[rank] + k  # stepwise position -> row of ``plain``
    stepwise = plain.view(f"V{BLOCK}").ravel()[rows].view(np.uint8).reshape(-1, BLOCK)
    cipher = np.empty((len(rows) + 1, BLOCK), dtype=np.uint8)  # a spare block: update_into wants the room
    mixed = np.empty((int(going[0]), BLOCK), dtype=np.uint8)
    ecb = ecb_context(key)
    np.bitwise_xor(stepwise[: going[0]], np.frombuffer(iv, dtype=np.uint8), out=mixed)
    dst = memoryview(cipher).cast("B")
    ecb.update_into(memoryview(mixed).cast("B"), dst)
    for at, previous, count in zip(step_at[1:].tolist(), step_at[:-1].tolist(), going[1:].tolist()):
        np.bitwise_xor(stepwise[at:at + count], cipher[previous:previous + count], out=mixed[:count])
        ecb.update_into(memoryview(mixed[:count]).cast("B"), dst[at * BLOCK:])
    out.view(f"V{BLOCK}").ravel()[rows] = cipher[:-1].view(f"V{BLOCK}").ravel()


class _Contexts(threading.local):
    """Per-thread AES contexts by key, reused from segment to segment: making one costs ~10 µs, as much as a few
    hundred blocks. An ECB context keeps no state between whole-block updates; a CTR context is re-pointed with
    ``reset_nonce``. (CBC contexts cannot be re-pointed: cryptography does not allow it.)"""

    def __init__(self) -> None:
        self.by_key: OrderedDict[bytes, tuple] = OrderedDict()

    def get(self, key: bytes) -> tuple:
        found = self.by_key.get(key)
        if found is None:
            aes = algorithms.AES(key)
            found = self.by_key[key] = (Cipher(aes, modes.ECB()).encryptor(),
                                        Cipher(aes, modes.CTR(bytes(BLOCK))).encryptor())
            if len(self.by_key) > CONTEXTS_KEPT:
                self.by_key.popitem(last=False)
        else:
            self.by_key.move_to_end(key)
        return found


_contexts = _Contexts()


def ecb_context(key: bytes):
    """This thread's AES-ECB encryptor for ``key`` (whole blocks only)."""
    return _contexts.get(key)[0]


def ctr_context(key: bytes, counter_block: bytes):
    """This thread's AES-CTR encryptor for ``key``, starting at ``counter_block``; valid until the next call."""
    context = _contexts.get(key)[1]
    context.reset_nonce(counter_block)
    return context
