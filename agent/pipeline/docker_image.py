"""``conveyor build --docker``: a docker image with a task's source and environment ready.

The task is prepared as docker mode prepares it (:class:`agent.pipeline.container.ContainerSandbox`:
its image, ``setup_shell_script``, the venv built in the container), then:

1. the holding container is committed (what the setup script changed in the image);
2. a container of that commit receives the task dir (checkout, venv, the task's command line in
   ``.conveyor/task.sh``), which lived in a bind mount and so was not in the commit;
3. that container is committed as the image: the venv first on ``PATH``, the task's working
   directory, no Conveyor labels (an agent would take its containers for its own leftovers) and,
   with the ``reuse_task`` entry point, the task's command line as ``CMD``.

The API credentials are never written into the image: ``docker run -e CLEARML_API_ACCESS_KEY=…
-e CLEARML_API_SECRET_KEY=…`` gives them (the holding container is created without them).
"""

from __future__ import annotations

import json
import shlex
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.pipeline.docker_create import TASK_SCRIPT
from agent.pipeline.docker_plan import LABEL_TASK, LABEL_WORKER

CREDENTIALS = ("CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY")
CONTROL_DIR = ".conveyor"  # as agent.pipeline.container: the FIFO there stays out of the image
ENTRY_POINTS = ("reuse_task",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into the image besides the prepared container's filesystem (pure data)."""

    task_dir: Path
    cwd: Path
    argv: Sequence[str]
    env: Mapping[str, str]  # the task's environment, credentials left out
    venv: Path | None  # None: the image's own Python (run as is)

    @property
    def script_path(self) -> str:
        return str(self.task_dir / CONTROL_DIR / TASK_SCRIPT)


def without_credentials(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in CREDENTIALS}


def entry_script(recipe: ImageRecipe) -> str:
    """Pure: the shell script that runs the task (its environment, then its command line)."""
    lines = ["# the task's command line, written by conveyor build --docker"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(recipe.env.items())]
    lines.append(f"cd {shlex.quote(str(recipe.cwd))} || exit 126")
    lines.append("exec " + shlex.join(recipe.argv))
    return "\n".join(lines) + "\n"


def commit_changes(recipe: ImageRecipe, image_path: str, entry_point: str | None) -> list[str]:
    """Pure: the Dockerfile instructions of the final commit."""
    changes = [f"WORKDIR {recipe.cwd}", f"LABEL {LABEL_WORKER}=", f"LABEL {LABEL_TASK}="]
    if recipe.venv is not None:
        path = f"{recipe.venv}/bin:{image_path or DEFAULT_PATH}"
        changes += [f"ENV PATH={path}", f"ENV VIRTUAL_ENV={recipe.venv}"]
    command = ["/bin/sh", recipe.script_path] if entry_point == "reuse_task" else ["/bin/sh"]
    changes.append(f"CMD {json.dumps(command)}")
    return changes


def _tree_archive(recipe: ImageRecipe, into: Any) -> None:
    """The task dir (at its absolute path, without the control dir) and the entry script."""
    root = recipe.task_dir
    with tarfile.open(fileobj=into, mode="w") as tar:
        for path in sorted(root.iterdir()):
            if path.name != CONTROL_DIR:
                tar.add(path, arcname=str(path).lstrip("/"))
        data = entry_script(recipe).encode()
        info = tarfile.TarInfo(recipe.script_path.lstrip("/"))
        info.size, info.mode = len(data), 0o644
        with tempfile.TemporaryFile() as script:
            script.write(data)
            script.seek(0)
            tar.addfile(info, script)
    into.seek(0)


def _image_path(image: Any) -> str:
    for item in image.attrs.get("Config", {}).get("Env") or []:
        if str(item).startswith("PATH="):
            return str(item)[len("PATH=") :]
    return ""


def make_image(
    prepared: Any, recipe: ImageRecipe, repository: str, tag: str, entry_point: str | None
) -> Any:
    """Blocking: the image from the prepared (holding) container ``prepared``; returns it."""
    client = prepared.client
    snapshot = prepared.commit(message="conveyor build: prepared container")
    filler = client.containers.create(snapshot.id, command=["/bin/true"])
    try:
        with tempfile.TemporaryFile() as archive:
            _tree_archive(recipe, archive)
            filler.put_archive("/", archive)
        changes = commit_changes(recipe, _image_path(snapshot), entry_point)
        return filler.commit(
            repository=repository, tag=tag, message="conveyor build --docker", changes=changes
        )
    finally:
        filler.remove(force=True, v=True)


def split_reference(reference: str) -> tuple[str, str]:
    """``name[:tag]`` → (name, tag), "latest" when no tag is given (a registry port is no tag)."""
    name, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        return reference, "latest"
    return name, tag
