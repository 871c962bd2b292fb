"""mcc.toml + flags → Settings: defaults, a valid file, and every kind of error."""
from __future__ import annotations

from pathlib import Path

import pytest

from mcc.project.settings import VALID_KEYS, Settings, flag_name, load_settings
from mcc.errors import ConfigError


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mcc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str | None = None, overrides=None) -> str:
    if text is not None:
        write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, overrides)
    message = str(info.value)
    assert "\n" not in message, "error messages are one paragraph"
    return message


def test_defaults_without_file(tmp_path):
    settings = load_settings(tmp_path)
    assert settings == Settings()
    assert settings.backend == "local" and settings.workers == 2 and settings.chunk_size is None
    assert settings.max_attempts == 3 and settings.entry is None
    assert settings.point_timeout == 600.0 and settings.lease_seconds == 30.0
    assert settings.results_dir == "results" and settings.aws == {}
    assert set(settings.to_dict()) == set(VALID_KEYS)


def test_valid_file_and_aws_table(tmp_path):
    write_toml(tmp_path, """
backend = "aws"
workers = 8
chunk_size = 50
max_attempts = 5
entry = "bands:bands"
point_timeout = 30          # an int is fine for a float field
lease_seconds = 12.5
results_dir = "out"

[aws]
region = "eu-west-1"
instance_type = "c6i.large"
spot = true
""")
    s = load_settings(tmp_path)
    assert (s.backend, s.workers, s.chunk_size, s.max_attempts) == ("aws", 8, 50, 5)
    assert s.entry == "bands:bands" and s.results_dir == "out"
    assert s.point_timeout == 30.0 and isinstance(s.point_timeout, float)
    assert s.lease_seconds == 12.5
    assert s.aws == {"region": "eu-west-1", "instance_type": "c6i.large", "spot": True}
    d = s.to_dict()
    d["aws"]["region"] = "changed"
    assert s.aws["region"] == "eu-west-1", "to_dict returns a copy"


def test_script_entry_accepted(tmp_path):
    write_toml(tmp_path, 'entry = "scripts/run.py"\n')
    assert load_settings(tmp_path).entry == "scripts/run.py"


def test_overrides_win_and_none_is_ignored(tmp_path):
    write_toml(tmp_path, "workers = 3\nchunk_size = 7\n")
    s = load_settings(tmp_path, {"workers": 9, "chunk_size": None, "entry": "m:f"})
    assert s.workers == 9 and s.chunk_size == 7 and s.entry == "m:f"


def test_unparsable_toml_names_file_line_and_column(tmp_path):
    path = write_toml(tmp_path, 'workers = 2\nbackend = local\n')
    message = error_of(tmp_path)
    assert str(path.resolve()) in message or str(path) in message
    assert "line 2" in message and "column" in message
    assert "not valid TOML" in message


def test_not_utf8(tmp_path):
    (tmp_path / "mcc.toml").write_bytes(b'backend = "\xff"\n')
    assert "UTF-8" in error_of(tmp_path)


def test_unknown_key_suggests_closest_and_lists_valid(tmp_path):
    message = error_of(tmp_path, "worker = 4\n")
    assert "`worker`" in message and "mcc.toml" in message
    assert "Did you mean `workers`?" in message
    for key in VALID_KEYS:
        assert key in message


def test_unknown_key_without_close_match(tmp_path):
    message = error_of(tmp_path, "zzz = 1\n")
    assert "`zzz`" in message and "Did you mean" not in message
    assert "Valid settings are" in message


@pytest.mark.parametrize("line, key, expected", [
    ('workers = "4"', "workers", "integer >= 1"),
    ("workers = 2.5", "workers", "integer >= 1"),
    ("chunk_size = [1]", "chunk_size", "integer >= 1"),
    ('point_timeout = "10"', "point_timeout", "seconds > 0"),
    ("backend = 1", "backend", '"local" or "aws"'),
    ('backend = "gcp"', "backend", '"local" or "aws"'),
    ("entry = 3", "entry", "module:function"),
    ('entry = "no_colon_here"', "entry", "module:function"),
    ("results_dir = \"\"", "results_dir", "non-empty string"),
    ('aws = "us-east-1"', "aws", "table"),
])
def test_wrong_types(tmp_path, line, key, expected):
    message = error_of(tmp_path, line + "\n")
    assert f"`{key}`" in message and expected in message and "mcc.toml" in message
    assert "got" in message and "Fix" in message


def test_string_number_hint(tmp_path):
    assert "without quotes" in error_of(tmp_path, 'workers = "4"\n')


@pytest.mark.parametrize("key", ["workers", "max_attempts", "chunk_size", "lease_seconds"])
def test_bool_is_not_a_number(tmp_path, key):
    message = error_of(tmp_path, f"{key} = true\n")
    assert f"`{key}`" in message and "True (a boolean)" in message
    assert "not a number" in message


@pytest.mark.parametrize("line, key", [
    ("workers = 0", "workers"),
    ("max_attempts = -1", "max_attempts"),
    ("chunk_size = 0", "chunk_size"),
    ("point_timeout = 0", "point_timeout"),
    ("lease_seconds = -0.5", "lease_seconds"),
    ("point_timeout = inf", "point_timeout"),
])
def test_out_of_range(tmp_path, line, key):
    message = error_of(tmp_path, line + "\n")
    assert f"`{key}`" in message and "got" in message


def test_py_module_entry_gets_hint(tmp_path):
    message = error_of(tmp_path, 'entry = "bands.py:bands"\n')
    assert '"bands:bands"' in message


@pytest.mark.parametrize("overrides, flag", [
    ({"workers": 0}, "--workers"),
    ({"chunk_size": -3}, "--chunk-size"),
    ({"max_attempts": True}, "--max-attempts"),
    ({"point_timeout": "soon"}, "--point-timeout"),
    ({"backend": "gcp"}, "--backend"),
    ({"entry": "nope"}, "--entry"),
])
def test_bad_override_names_the_flag(tmp_path, overrides, flag):
    write_toml(tmp_path, "workers = 2\n")
    message = error_of(tmp_path, overrides=overrides)
    assert flag in message and "mcc.toml" not in message
    assert f"Fix: pass e.g. `{flag}" in message


def test_unknown_override(tmp_path):
    message = error_of(tmp_path, overrides={"wrokers": 3})
    assert "`wrokers`" in message and "`workers`" in message


def test_flag_name():
    assert flag_name("chunk_size") == "--chunk-size" and flag_name("workers") == "--workers"


def test_missing_project_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message
    assert f"mcc init {missing}" in message


def test_project_path_is_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        load_settings(path)
