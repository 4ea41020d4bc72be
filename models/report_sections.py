"""Sections of a model's REPORT.md that later steps of `make models` write: each between
`<!-- TAG:begin -->` and `<!-- TAG:end -->`, replaced on every run, appended the first
time (build_stages.py, build_generator.py, tools/live_report.py)."""
import pathlib


def write_section(report, tag, lines):
    """Puts `lines` (the section's text, without its markers) into `report` as section `tag`."""
    report = pathlib.Path(report)
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    section = "\n".join([begin, *lines, end, ""])
    text = report.read_text() if report.exists() else ""
    if begin in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    report.write_text(text)
    return section
