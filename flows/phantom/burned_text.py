"""Identity burned into the pixels, as consoles and digitisers draw it: which patients carry it, the
lines drawn, and the two styles (a console overlay on pacs radiographs, a light film label on a
digitised public copy)."""

from __future__ import annotations

import numpy as np

from flows.phantom.patients import PhantomPatient


def has_burned_text(p: PhantomPatient) -> bool:
    """Patients whose radiographs show their identity in the pixels (none of them has a public copy of the
    same pixels, so exact duplicates stay exact)."""
    return p.index % 4 == 1 and p.index != 1


def burned_lines(p: PhantomPatient) -> list[str]:
    return [f"{p.family.upper()}^{p.given.upper()}", f"{p.patient_id} {p.birth_date}"]


def burn_identity(arr: np.ndarray, p: PhantomPatient, side: str) -> np.ndarray:
    """The console overlay: name, ID and birth date, boxed top-left on left knees, bare bottom-right on right."""
    from ingest.text.render import TextStyle, burn

    style = TextStyle(font="DejaVuSans-Bold.ttf" if side == "L" else "DejaVuSansMono.ttf", height=0.035,
                      frame="box" if side == "L" else "none", corner="top-left" if side == "L" else "bottom-right")
    return burn(arr, burned_lines(p), style)[0]


def burn_film_label(arr: np.ndarray, p: PhantomPatient) -> np.ndarray:
    """A digitised film: the ID and birth date, dark on a light label at the bottom left."""
    from ingest.text.render import TextStyle, burn

    return burn(arr, burned_lines(p)[1:], TextStyle(height=0.04, polarity="dark", frame="box",
                                                     corner="bottom-left"))[0]
