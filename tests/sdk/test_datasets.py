"""examples/datasets and `clearml-data`: create, add files, upload, finalize, a child with
parents, Dataset.get by project/name/version/id, get_local_copy, list_datasets."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT
from tests.sdk.support import Plane, run

pytestmark = pytest.mark.slow


LIFECYCLE = """
import os
from pathlib import Path
from clearml import Dataset
for folder, name in (("base", "a.txt"), ("more", "b.txt")):
    Path(folder).mkdir()
    (Path(folder) / name).write_text(name)
ds = Dataset.create(dataset_project="sdk/datasets", dataset_name="tiny")
ds.add_files("base")
ds.upload()
ds.finalize()
child = Dataset.create(dataset_project="sdk/datasets", dataset_name="tiny-child",
                       parent_datasets=[ds.id])
child.add_files("more")
child.upload()
child.finalize()
by_name = Dataset.get(dataset_project="sdk/datasets", dataset_name="tiny")
by_version = Dataset.get(dataset_project="sdk/datasets", dataset_name="tiny",
                         dataset_version=ds.version)
again = Dataset.get(dataset_id=child.id)
local = again.get_local_copy()
emit({"id": ds.id, "by_name": by_name.id, "by_version": by_version.id,
      "files": sorted(os.listdir(local)), "parents": again.get_dependency_graph()[child.id]})
"""

LIST = """
from clearml import Dataset
ds = Dataset.create(dataset_project="sdk/datasets-list", dataset_name="listed")
ds.finalize(auto_upload=True)
emit([d["id"] for d in Dataset.list_datasets(dataset_project="sdk/datasets-list")] + [ds.id])
"""


def test_dataset_lifecycle(plane: Plane) -> None:
    out: dict[str, Any] = run(plane, LIFECYCLE)
    assert out["by_name"] == out["id"] == out["by_version"]
    assert out["files"] == ["a.txt", "b.txt"]
    assert out["id"] in out["parents"]


def test_list_datasets(plane: Plane) -> None:
    *listed, made = run(plane, LIST)
    assert made in listed


def clearml_data(plane: Plane, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "clearml-data"), *args],
        cwd=cwd, env=plane.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_clearml_data_create_add_close_get(plane: Plane, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "x.csv").write_text("a,b\n1,2\n")
    made = clearml_data(plane, tmp_path, "create", "--project", "sdk/cli", "--name", "cli-ds")
    assert made.returncode == 0, made.stdout + made.stderr
    created = re.search(r"New dataset created id=([0-9a-f]{32})", made.stdout)
    assert created, made.stdout
    added = clearml_data(plane, tmp_path, "add", "--files", "files")
    assert added.returncode == 0, added.stdout + added.stderr
    closed = clearml_data(plane, tmp_path, "close")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    target = tmp_path / "copy"
    # clearml-data get takes a dataset id (no project/name lookup in its CLI)
    got = clearml_data(plane, tmp_path, "get", "--id", created.group(1), "--copy", str(target))
    assert got.returncode == 0, got.stdout + got.stderr
    assert sorted(os.listdir(target)) == ["x.csv"]
