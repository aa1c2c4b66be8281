import io
import logging

import pytest

from isthmus import log


def test_one_structured_line_per_event():
    out = io.StringIO()
    log.setup("pilot", "info", stream=out)
    log.event(logging.getLogger("pilot.xds"), logging.INFO, "xds.push", proxies=3, reason="config changed")
    logging.getLogger("pilot.xds").debug("hidden at info level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert " level=info component=pilot logger=pilot.xds event=xds.push proxies=3 " in line
    assert line.endswith('reason="config changed"')


def test_level_from_environment(monkeypatch):
    monkeypatch.setenv(log.ENV_VAR, "debug")
    out = io.StringIO()
    log.setup("mixer", stream=out)
    logging.getLogger("m").debug("visible")
    assert "event=visible" in out.getvalue()


def test_unknown_level_names_the_choices():
    with pytest.raises(ValueError, match="expected one of .*debug"):
        log.parse_level("loud")
