"""Closed vocabularies: the only way a header's text reaches the catalog.

Every normaliser returns a term from a fixed list (or None). A planted name in a description can
therefore never pass: at most it fails to match, and the attribute stays unknown.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[A-Z0-9]+")


def tokens(*texts: object) -> list[str]:
    out: list[str] = []
    for text in texts:
        if text is None:
            continue
        if isinstance(text, (list, tuple)):
            out.extend(tokens(*text))
            continue
        out.extend(_TOKEN.findall(str(text).upper().replace("_", " ")))
    return out


MODALITIES = {
    "CR", "DX", "MR", "CT", "US", "NM", "PT", "XA", "RF", "MG", "OT", "SC", "IO", "PX", "RG", "DR",
    "SR", "PR", "KO", "SEG", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "DOC", "OPT", "XC",
}


def modality(value: object) -> str | None:
    t = str(value or "").strip().upper()
    return t if t in MODALITIES else None


_BODY_PARTS = {
    "knee": {"KNEE", "KNEES", "KNIE", "GENOU", "RODILLA", "GINOCCHIO", "PATELLA", "MENISCUS", "ACL", "PCL"},
    "hip": {"HIP", "HIPS", "HUEFTE", "HANCHE", "CADERA", "ANCA", "ACETABULUM"},
    "shoulder": {"SHOULDER", "SCHULTER", "EPAULE", "HOMBRO", "SPALLA", "ROTATOR", "GLENOHUMERAL"},
    "ankle": {"ANKLE", "SPRUNGGELENK", "CHEVILLE", "TOBILLO", "CAVIGLIA", "TALUS"},
    "foot": {"FOOT", "FEET", "FUSS", "PIED", "PIE", "CALCANEUS"},
    "hand": {"HAND", "HANDS", "MAIN", "MANO", "FINGER", "FINGERS"},
    "wrist": {"WRIST", "HANDGELENK", "POIGNET", "MUNECA", "POLSO", "CARPUS"},
    "elbow": {"ELBOW", "ELLENBOGEN", "COUDE", "CODO", "GOMITO"},
    "femur": {"FEMUR", "THIGH"},
    "leg": {"LEG", "TIBIA", "FIBULA", "LOWERLEG", "EXTREMITY", "LOWER"},
    "arm": {"ARM", "HUMERUS", "FOREARM", "RADIUS", "ULNA"},
    "pelvis": {"PELVIS", "BECKEN", "BASSIN", "SACRUM"},
    "spine": {"SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "LUMBAR", "CERVICAL", "THORACIC", "WS", "LWS", "HWS", "BWS"},
    "chest": {"CHEST", "THORAX", "LUNG", "LUNGS"},
    "head": {"HEAD", "BRAIN", "SKULL", "CRANIUM"},
    "abdomen": {"ABDOMEN", "ABD", "LIVER"},
}
_BODY_PART_OF_TOKEN = {tok: part for part, toks in _BODY_PARTS.items() for tok in toks}
BODY_PARTS = set(_BODY_PARTS) | {"unknown"}


def body_part(*texts: object) -> str | None:
    """The first body part named in the texts, in order of trust (header field first)."""
    for text in texts:
        for tok in tokens(text):
            if tok in _BODY_PART_OF_TOKEN:
                return _BODY_PART_OF_TOKEN[tok]
    return None


def laterality(value: object) -> str | None:
    t = str(value or "").strip().upper()
    return {"L": "L", "R": "R", "B": "B", "U": "U", "LEFT": "L", "RIGHT": "R", "BOTH": "B"}.get(t)


def laterality_from_text(*texts: object) -> str | None:
    toks = set(tokens(*texts))
    left = bool(toks & {"LEFT", "LT", "LINKS", "GAUCHE", "IZQUIERDA"})
    right = bool(toks & {"RIGHT", "RT", "RECHTS", "DROITE", "DERECHA"})
    if left != right:
        return "L" if left else "R"
    return None


_VIEWS = {
    "AP": "ap", "PA": "pa", "LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral",
    "RLD": "lateral", "LLD": "lateral", "OBL": "oblique", "LAO": "oblique", "RAO": "oblique",
    "LPO": "oblique", "RPO": "oblique", "AXIAL": "axial", "SKYLINE": "skyline", "MERCHANT": "skyline",
    "SUNRISE": "skyline", "TUNNEL": "tunnel", "PAWEIGHT": "pa", "STANDING": None,
}
VIEWS = {v for v in _VIEWS.values() if v}


def view(*texts: object) -> str | None:
    for tok in tokens(*texts):
        if _VIEWS.get(tok):
            return _VIEWS[tok]
    return None


PLANES = {"axial", "coronal", "sagittal", "oblique"}


def plane(value: object) -> str | None:
    t = str(value or "").strip().lower()
    aliases = {"ax": "axial", "tra": "axial", "transverse": "axial", "cor": "coronal", "sag": "sagittal"}
    t = aliases.get(t, t)
    return t if t in PLANES else None


def sequence(*texts: object) -> tuple[str | None, bool | None]:
    """MRI sequence family (t1, t2, pd, stir, gre, dwi, flair) and fat suppression from descriptions."""
    toks = set(tokens(*texts))
    joined = " ".join(tokens(*texts))
    family = None
    for fam, keys in (
        ("stir", {"STIR", "TIRM"}),
        ("flair", {"FLAIR"}),
        ("dwi", {"DWI", "DIFFUSION", "ADC", "EP2D"}),
        ("pd", {"PD", "PDW", "PDFS", "PDWFS", "DP", "RHO"}),
        ("t2", {"T2", "T2W", "T2WI", "T2FS", "T2STAR", "T2TSE", "T2FSE"}),
        ("t1", {"T1", "T1W", "T1WI", "T1FS", "T1TSE", "T1FSE", "T1SE", "MPRAGE", "VIBE", "SPGR", "FLASH3D"}),
        ("gre", {"GRE", "FFE", "MEDIC", "MERGE", "FLASH", "DESS", "CISS", "FIESTA", "TRUEFISP"}),
    ):
        if toks & keys:
            family = fam
            break
    fat = None
    if toks & {"FS", "FATSAT", "SPAIR", "SPIR", "STIR", "TIRM", "PDFS", "T2FS", "T1FS", "PDWFS", "DIXON", "WE", "FSAT"} or "FAT SAT" in joined:
        fat = True
    return family, fat


_MANUFACTURERS = {
    "ge": {"GE", "GEMS"}, "siemens": {"SIEMENS"}, "philips": {"PHILIPS"}, "canon": {"CANON", "TOSHIBA"},
    "fujifilm": {"FUJI", "FUJIFILM"}, "agfa": {"AGFA"}, "carestream": {"CARESTREAM", "KODAK"},
    "hologic": {"HOLOGIC"}, "hitachi": {"HITACHI"}, "samsung": {"SAMSUNG"}, "konica": {"KONICA"},
    "esaote": {"ESAOTE"}, "shimadzu": {"SHIMADZU"}, "united_imaging": {"UIH", "UNITED"}, "varex": {"VAREX", "VARIAN"},
}
_MANUFACTURER_OF_TOKEN = {tok: m for m, toks in _MANUFACTURERS.items() for tok in toks}


def manufacturer(value: object) -> str | None:
    for tok in tokens(value):
        if tok in _MANUFACTURER_OF_TOKEN:
            return _MANUFACTURER_OF_TOKEN[tok]
    return "other" if str(value or "").strip() else None


MODEL_FAMILIES = {
    "SIGNA", "DISCOVERY", "OPTIMA", "GENESIS", "HDXT", "PIONEER", "ARCHITECT", "PREMIER",
    "MAGNETOM", "AVANTO", "AERA", "SKYRA", "VERIO", "TRIO", "PRISMA", "VIDA", "ESPREE", "SYMPHONY",
    "SONATA", "ALTEA", "SOLA", "ACHIEVA", "INGENIA", "INTERA", "PANORAMA", "ELITION", "VANTAGE",
    "TITAN", "GALAN", "ORIAN", "ECHELON", "AIRIS", "OASIS", "BRIVO", "DEFINIUM", "REVOLUTION",
    "YSIO", "MULTIX", "LUMINOS", "DIGITALDIAGNOST", "DRX", "FCR", "PRIMA", "CALNEO", "VELOCITY",
    "PROFECT", "DIRECTVIEW", "CLASSIC", "MAGNETOMESPREE", "OPERA", "SCANEXPRESS", "GSCAN", "OSCAR",
}


def model_family(value: object) -> str | None:
    for tok in tokens(value):
        if tok in MODEL_FAMILIES:
            return tok.lower()
    return "other" if str(value or "").strip() else None


PHOTOMETRIC = {
    "MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420",
    "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_422", "ARGB", "CMYK", "HSV",
}


def photometric(value: object) -> str | None:
    t = str(value or "").strip().upper()
    return t if t in PHOTOMETRIC else None


SPLITS = {"train", "val", "test"}


def split(value: object) -> str | None:
    t = str(value or "").strip().lower()
    t = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}.get(t, t)
    return t if t in SPLITS else None


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.+-]{1,24}$")


def label_value(value: object) -> str | None:
    """Labels are short codes or numbers; anything else (a sentence, a name with a space) is refused."""
    t = str(value if value is not None else "").strip()
    return t if _LABEL_VALUE.match(t) else None


_LOCALIZER = {"LOCALIZER", "LOCALISER", "LOC", "SCOUT", "SURVEY", "PILOT", "TRIPILOT", "3PLANE", "SCANOGRAM", "TOPOGRAM"}


def image_kind(image_type: object, *texts: object) -> str | None:
    """localizer (scout/survey images), derived, original, or None when nothing says."""
    kinds = tokens(image_type)
    if set(kinds) & _LOCALIZER or set(tokens(*texts)) & _LOCALIZER:
        return "localizer"
    if kinds:
        return "derived" if kinds[0] == "DERIVED" else "original" if kinds[0] == "ORIGINAL" else None
    return None
