"""The Slurm commands the glue runs (``sbatch``, ``squeue``, ``scancel``, ``sacct``), each one
counted, never through a shell: every argument is a list item, values come whitelisted."""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Mapping, Sequence

import structlog

from agent.slurm.states import SQUEUE_FORMAT, Job, parse_job_name, parse_squeue

log = structlog.get_logger()
COMMAND_TIMEOUT = 60.0  # seconds: a controller that does not answer is an error, not a hang
SACCT_FORMAT = "JobID,JobName%100,State"


# What Slurm's commands print when the controller is away (restarting, overloaded): worth
# another try later, unlike a refusal of the job itself (bad partition, over a limit).
_TRANSIENT = re.compile(
    r"unable to contact slurm controller|socket timed out|connection refused|"
    r"temporarily unable|slurmctld.*(down|busy)|did not answer",
    re.IGNORECASE,
)


class SlurmError(RuntimeError):
    """A Slurm command failed; the message has its stderr."""

    @property
    def transient(self) -> bool:
        return is_transient(str(self))


def is_transient(message: str) -> bool:
    """Pure: does this failure say the controller is away (try later) rather than no?"""
    return bool(_TRANSIENT.search(message))


class SlurmCli:
    def __init__(self, bin_dir: str = "") -> None:
        self.bin_dir = bin_dir.rstrip("/")
        self.calls: collections.Counter[str] = collections.Counter()
        self.sacct_available = True

    async def _run(
        self,
        command: str,
        *args: str,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        self.calls[command] += 1
        program = f"{self.bin_dir}/{command}" if self.bin_dir else command
        process = await asyncio.create_subprocess_exec(
            program, *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), COMMAND_TIMEOUT
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SlurmError(f"{command} did not answer within {COMMAND_TIMEOUT:g} s") from None
        if process.returncode != 0:
            raise SlurmError(f"{command} failed ({process.returncode}): {err.decode().strip()}")
        return out.decode()

    async def submit(self, script: str, options: Sequence[str], env: Mapping[str, str]) -> str:
        """``sbatch --parsable`` with the script on stdin; the job id."""
        out = await self._run("sbatch", "--parsable", *options, stdin=script, env=env)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {out.strip()!r}, not a job id")
        return job_id

    async def jobs(self, prefix: str) -> list[Job]:
        """All of the glue's jobs Slurm still knows (queued, running, recently ended): one call."""
        text = await self._run("squeue", "--states=all", "--noheader", f"--format={SQUEUE_FORMAT}")
        return parse_squeue(text, prefix)

    async def cancel(self, job_id: str, signal: str = "") -> None:
        args = [f"--signal={signal}", "--full"] if signal else []
        await self._run("scancel", *args, job_id)

    async def history(self, job_ids: Sequence[str], prefix: str) -> dict[str, Job]:
        """Jobs that left ``squeue``, from ``sacct``; {} without accounting (then said once)."""
        if not job_ids or not self.sacct_available:
            return {}
        try:
            text = await self._run(
                "sacct", "--noheader", "--parsable2", "-X", f"--format={SACCT_FORMAT}",
                f"--jobs={','.join(job_ids)}",
            )  # fmt: skip
        except SlurmError as exc:
            self.sacct_available = False
            log.warning("sacct unavailable: ended jobs are seen only while squeue shows them",
                        error=str(exc))  # fmt: skip
            return {}
        found: dict[str, Job] = {}
        for line in text.splitlines():
            parts = line.split("|")
            named = parse_job_name(prefix, parts[1]) if len(parts) == 3 else None
            if named is not None:
                found[parts[0]] = Job(parts[0], named[0], named[1], parts[2].split()[0])
        return found
