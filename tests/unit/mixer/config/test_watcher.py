import os

from mixer.config.watcher import ConfigHolder


def test_reload_swaps_on_change_and_keeps_old_on_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("quota: {failureMode: closed}\n")
    results, seen = [], []
    holder = ConfigHolder(str(path), results.append)
    holder.listeners.append(seen.append)
    holder.load_initial()
    assert holder.current.quota.failure_mode == "closed"
    assert holder.poll_once() is None  # unchanged

    path.write_text("quota: {failureMode: open}\n")
    assert holder.poll_once() is True and holder.current.quota.failure_mode == "open"
    assert seen == [holder.current]

    good = holder.current
    path.write_text("quota: {failureMode: bogus}\n")
    assert holder.poll_once() is False and holder.current is good
    assert holder.poll_once() is None  # the same bad file is reported once

    os.unlink(path)
    assert holder.poll_once() is False and holder.current is good
    assert results == [True, True, False, False]


def test_no_file_means_defaults():
    holder = ConfigHolder(None)
    holder.load_initial()
    assert holder.poll_once() is None and holder.current.policy.rules == ()
