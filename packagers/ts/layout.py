"""Where every byte of a TS segment's payload goes: the output of ``TsMuxer._layout``, shared by its two builds.

A *unit* is a sample with its prefix; a PES's first unit's prefix is the PES's *lead*: [adaptation field][PES
header][AUD or ADTS header], the adaptation field carrying all the PES's stuffing (0xFF). ``pieces`` lays the payload
out for one ``writelines`` from samples already read; ``place_prefixes`` writes the prefixes into a payload buffer
whose samples are then read straight into their places.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codecs.aac import ADTS_HEADER_SIZE
from . import packets as p
from .pes import AF, FIRST, PACKETS, STUFFING, Units

PES_HEADER_SIZE = 19  # 6 + 3 + PTS 5 + (DTS or 5 stuffing bytes), before any PCR stuffing
_PAYLOAD = p.TS_PAYLOAD_SIZE
_AR7, _AR8, _AR19 = np.arange(7), np.arange(8), np.arange(PES_HEADER_SIZE)
# A PES's lead: adaptation field (< 184 bytes) + PES header (19 + up to 8 bytes of stuffing) + AUD or ADTS header
_LEAD_WIDTH = _PAYLOAD + 40
HEAD_SIZE = 7  # room for a unit's AUD (6 bytes for H.264, 7 for HEVC) or ADTS header


@dataclass(eq=False)
class SegmentLayout:
    """Where each unit of a segment goes; units are numbered stream by stream, output positions in DTS order."""

    units: list[Units]
    pes: np.ndarray  # the per-PES table, in output order
    unit_order: np.ndarray  # output position -> unit
    out_pos: np.ndarray  # unit -> output position
    out_first: np.ndarray  # per PES: the output position of its first unit
    body_len: np.ndarray  # per output unit
    body_at: np.ndarray  # per output unit: where its body starts in the payload
    unit_ps: np.ndarray  # per output unit: bytes of parameter sets just before its body
    lead: np.ndarray  # (27, n_pes): each PES's adaptation field head (8 bytes) and PES header (19)
    heads: np.ndarray  # (n_pes, 7): the AUD or ADTS header of each PES's first unit
    lead_len: np.ndarray  # per PES: its bytes up to its first unit's parameter sets or body
    rows_after: np.ndarray  # per PES: TS packets up to its end
    n_rows: int  # TS packets of the payload

    def write_leads(self, flat: np.ndarray, at: np.ndarray) -> None:
        """Each PES's lead into ``flat`` at ``at`` (per PES), over a 0xFF background (the stuffing), in an order
        where each write's spill is written over by a later one: the AUD/ADTS headers (7 bytes: a 6-byte AUD spills
        one byte into what follows its PES's lead, at worst the next PES's first byte), the adaptation field heads
        (8 bytes even when shorter), then the PES headers. ``flat`` has room for 1 byte past the last PES."""
        pes = self.pes
        header_at = at + pes[AF]
        flat[(header_at + PES_HEADER_SIZE + pes[STUFFING])[:, None] + _AR7] = self.heads
        flat[_AR8[:, None] + at] = self.lead[:8]
        flat[_AR19[:, None] + header_at] = self.lead[8:]

    @property
    def leads(self) -> np.ndarray:
        """(n_pes, _LEAD_WIDTH): each PES's lead, left-aligned in a row (``lead_len`` bytes of it)."""
        leads = np.full((len(self.out_first), _LEAD_WIDTH), 0xFF, dtype=np.uint8)
        self.write_leads(leads.reshape(-1), np.arange(0, leads.size, _LEAD_WIDTH))
        return leads

    def parameter_sets(self) -> np.ndarray:
        """The parameter sets joined behind key frames' AUDs (only video has them, and it comes first)."""
        prefixes = self.units[0].stream.prefixes
        return prefixes[1][len(prefixes[0]) :]

    def _later_heads(self) -> tuple[np.ndarray, np.ndarray]:
        """The units that do not start a PES (AAC frames after the first of their PES): their output positions and
        their ADTS headers (n, 7)."""
        rows, heads, base = [], [], 0
        for u in self.units:
            if u.adts is not None:
                later = np.ones(len(u.unit_len), dtype=bool)
                later[u.pes[FIRST] - base] = False
                j = np.flatnonzero(later)
                rows.append(self.out_pos[base + j])
                heads.append(u.adts[j])
            base += len(u.unit_len)
        if len(rows) == 1:
            return rows[0], heads[0]
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, ADTS_HEADER_SIZE), dtype=np.uint8)
        return np.concatenate(rows), np.concatenate(heads)

    def pieces(self) -> list:
        """The TS payload as (prefix, body) for each unit in output order, for one ``writelines``."""
        n_units = len(self.unit_order)
        leads = self.leads.reshape(-1)
        start, length = np.empty(n_units, dtype=np.int64), np.empty(n_units, dtype=np.int64)
        start[self.out_first] = np.arange(0, len(leads), _LEAD_WIDTH)
        length[self.out_first] = self.lead_len
        rows, heads = self._later_heads()
        if len(rows):  # their ADTS headers behind the leads, in one buffer
            leads = np.concatenate((leads, heads.reshape(-1)))
            start[rows] = np.arange(len(leads) - heads.size, len(leads), ADTS_HEADER_SIZE)
            length[rows] = ADTS_HEADER_SIZE
        view = memoryview(leads)
        pieces: list = [None] * (2 * n_units)
        pieces[0::2] = map(view.__getitem__, map(slice, start.tolist(), (start + length).tolist()))
        keyed = np.flatnonzero(self.unit_ps).tolist()
        if keyed:
            parameter_sets = self.parameter_sets().tobytes()
            for r in keyed:
                pieces[2 * r] = b"".join((pieces[2 * r], parameter_sets))
        units = self.units
        bodies = units[0].bodies if len(units) == 1 else [b for u in units for b in u.bodies]
        pieces[1::2] = list(map(bodies.__getitem__, self.unit_order.tolist()))
        return pieces

    def place_prefixes(self, payload: np.ndarray) -> None:
        """Write every prefix (and the parameter sets) into ``payload`` where ``pieces`` would have put them, before
        the bodies: each PES's lead goes in as its first TS packet's whole row (the rest of that row is written
        again by later prefixes and the bodies), a lead longer than a packet spills into the next row."""
        rows = payload[: self.n_rows * _PAYLOAD].reshape(self.n_rows, _PAYLOAD)
        first_row = self.rows_after - self.pes[PACKETS]
        rows[first_row] = 0xFF
        spill = np.flatnonzero(self.lead_len > _PAYLOAD)
        if len(spill):
            rows[first_row[spill] + 1, : _LEAD_WIDTH - _PAYLOAD] = 0xFF
        self.write_leads(payload, first_row * _PAYLOAD)
        later, heads = self._later_heads()
        if len(later):
            payload[(self.body_at[later] - ADTS_HEADER_SIZE)[:, None] + _AR7] = heads
        keyed = np.flatnonzero(self.unit_ps)
        if len(keyed):
            parameter_sets = self.parameter_sets()
            payload[(self.body_at[keyed] - len(parameter_sets))[:, None] + np.arange(len(parameter_sets))] = \
                parameter_sets
