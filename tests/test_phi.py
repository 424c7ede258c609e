"""No planted identifying value may appear anywhere in the workspace but the private lineage table."""

import logging
import re

from flows.phantom import planted_values
from tests.phi_scan import scan_workspace


def test_planted_phi_never_lands(phantom_workspace, phantom_root, caplog):
    ws, _ = phantom_workspace
    needles = planted_values()
    assert "Zorblatt" in needles and any(n.startswith("PHX") for n in needles)
    # the planted values really are in the source tree: folder names, file names and headers
    tree = "\n".join(str(p) for p in phantom_root.rglob("*"))
    assert "ZORBLATT" in tree and "Zorblatt_Q_knee_L.dcm" in tree
    assert scan_workspace(ws.root, needles) == []


def test_lineage_is_the_one_place_paths_are_kept(phantom_workspace):
    from catalog import db

    ws, _ = phantom_workspace
    con = db.connect(ws, private=True)
    paths = [p for (p,) in con.execute("SELECT path FROM lineage").fetchall()]
    con.close()
    assert any("ZORBLATT" in p for p in paths)


def test_quarantine_messages_name_no_path(tmp_path, caplog, phantom_root):
    from catalog.workspace import Workspace
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    ws = Workspace.open(tmp_path / "w")
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal"))
    with caplog.at_level(logging.INFO, logger="ortho"):
        ingest_source(ws, "pacs")
    text = caplog.text
    assert "quarantined file" in text
    assert not re.search("|".join(re.escape(n) for n in planted_values() + ["broken", ".dcm", str(phantom_root)]), text, re.I)


def test_a_source_root_named_after_a_patient_stays_in_lineage(tmp_path, phantom_root):
    from catalog.workspace import Workspace
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    named = tmp_path / "exports" / "Zorblatt_Quentin_PHX7731ZQ"
    named.parent.mkdir()
    named.symlink_to(phantom_root / "pacs")
    ws = Workspace.open(tmp_path / "w")
    add_source(ws, Source("pacs", str(named), "internal", labels=["csv:labels.csv"]))
    ingest_source(ws, "pacs")
    assert scan_workspace(ws.root, planted_values()) == []
    assert "Zorblatt_Quentin" in (ws.lineage_dir / "sources.json").read_text()
