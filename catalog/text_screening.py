"""Which burned-in text screen an image went through, and which screens the DICOM export's Clean Pixel Data claim
(BurnedInAnnotation = NO, code 113101) may rest on: one fact shared by ingest (which records it per image, in
`occurrences.text_detector`) and the export (which reads it).

ortho-text-1 read horizontal lines at one rendering only: a label along the edge turned 90 degrees, or faint text
in a 16-bit image that only a narrow window shows, passed it. Images it screened are exported with the source's
flag unchanged (they are re-screened when ingested again).

ortho-text-2 covered both, but two cases were measured to pass it: a faint line straddling the edge of a thin
border band (read at the band's window, the part on anatomy stayed readable), and small serif letters a few levels
off a bright band (the stroke measure glued them into word blobs that were not taken for text). ortho-text-3 reads
a candidate at its own pixels' window widened past the text's side, and also looks for text one letter at a time.
Images screened by ortho-text-2 are exported like ortho-text-1's: the flag unchanged, until ingested again.

ortho-text-3 still passed two faint cases: dark text filling a thin bright band, and small light monospace on a
dark band. In both the text (and, at the band's edge, the anatomy) pulled the local mean the narrow window is set on
its way, so the letters showed at a fraction of their contrast and gave no candidate. ortho-text-4 takes that mean
over the band's own pixels only. Images screened by ortho-text-3 are exported like ortho-text-2's: the flag
unchanged, until ingested again.

ortho-text-4 still passed bold or dense text some 30 noise widths off a quiet band (the full bench's f0009 and
f0050): near the lines most pixels lay more than three noise widths off the pulled mean (the band on one side, the
text on the other), so the mean stayed pulled and the letters showed in a halo of the other polarity, with no
candidate. It also passed light text drawn at the top of the value range over bone almost as bright (and dark text
at the bottom over soft tissue): a few grey levels off its surround at the whole-range window. ortho-text-5 finds a
pulled cell's level from the side of the pulled mean that holds most of its pixels first, and windows the last
levels before an extreme value where a label-like set of thin strokes sits there. Images screened by ortho-text-4
are exported like ortho-text-3's: the flag unchanged, until ingested again.

ortho-text-5 still passed two labels at an extreme value of the full bench: one whose pixels there were widened by
a speck of bone at the same value (u0071), and a dark one beside background clipped at the bottom of the range
(t0010). ortho-text-6 reads the label's own cluster of extreme pixels, judges a label's strokes apart from a
clipped patch, and splits such a label's candidates into its lines. Images screened by ortho-text-5 are exported
like ortho-text-4's: the flag unchanged, until ingested again.

ortho-text-6 still passed light text filling a thin dark band beside a large, noisier flat patch (saturated bone;
the full bench's f0025): the band's quiet cells were judged against the image's median quiet noise, which the patch
set, so the text's inflated cells were no outliers. ortho-text-7 takes a flat region's own quiet noise where it is
well under the image's. Images screened by ortho-text-6 are exported like ortho-text-5's: the flag unchanged, until
ingested again.

ortho-text-7 still passed, on seed 2 of the bench, small turned labels OCR's detector saw at one turn of the crop
only (the other was not read where the first showed nothing), and light two-line labels over bright bone whose lines
joined into one row of blurred classes. ortho-text-8 reads both turns, takes a busy row of text-strength strokes as
a candidate, and reads a joined row a line at a time. Images screened by ortho-text-7 are exported like
ortho-text-6's: the flag unchanged, until ingested again.

ortho-text-8 still passed, on seeds 2 and 3 of the bench, dark serif labels turned along the edge of 224 and 512 px
knees (strokes a pixel wide, weakened by anti-aliasing under the busy row's stroke floor), and dark text filling a
thin bright band whose second line lay near the band's edge, where the band's level pulled by the text was not
found again. ortho-text-9 takes busy rows of weaker strokes on copies of at most 512 px, and finds a pulled level
anywhere in a flat region (near its edge only where that level holds most of the pixels). It also passed light
labels at the image's maximum where bone is clipped at the same value (seeds 2 and 3, 8-bit 3000 px): the extreme
was the whole-range window's own edge, and the clipped patch most of the pixels there; ortho-text-9 looks at the
extreme whatever the window, and judges a label apart from a patch of up to 90% of the extreme's pixels. Images
screened by ortho-text-8 are exported like ortho-text-7's: the flag unchanged, until ingested again.
"""

from __future__ import annotations

TEXT_DETECTOR = ("ortho-text-9 (both orientations, local windows about the border level without the text even "
                 "where it pulls it far off, each flat region at its own noise, letter rows, labels at an extreme "
                 "value, beside clipped patches or specks, busy rows, joined lines apart; morphology candidates + "
                 "RapidOCR PP-OCRv6 at both turns on small images)")
CLAIMS_CLEAN = (TEXT_DETECTOR,)


def claims_clean_sql(column: str) -> str:
    """A SQL condition: the screen recorded in `column` covers orientation and window."""
    return f"coalesce({column} IN ({', '.join(repr(v) for v in CLAIMS_CLEAN)}), false)"
