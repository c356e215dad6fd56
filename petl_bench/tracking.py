"""W&B as an optional second view of a run (`petl-bench run --wandb`, or `logging.wandb=true`).

The run record stays the result; W&B gets the same numbers: project `petl-bench`, group
`{dataset}/{split}`, job type = method, name `{run_name}-seed{K}`, config = the resolved run config,
per-task and average accuracy and the trainable parameter count as summary values.
With no API key, or no route to the W&B server, the run is logged offline (never a login prompt or
a hang) and one line says how to upload it later with `wandb sync`. W&B never loses a run: when the
server refuses the run (a 401 for a revoked key) or W&B fails in any other way, one warning says so
and the run goes on, logged offline or, if even that fails, not at all; its record is written.
"""

from __future__ import annotations

import netrc
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

from .config import RunConfig
from .datamodules import canonical_split

DEFAULT_BASE_URL = "https://api.wandb.ai"
CONNECT_TIMEOUT_S = 3.0
INIT_TIMEOUT_S = 90.0


def wandb_mode() -> str:
    """`WANDB_MODE` if set; else online with an API key and a reachable server, offline otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    base = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL))
    host = base.hostname or ""
    if not (os.environ.get("WANDB_API_KEY") or _netrc_has(host)):
        return "offline"
    try:
        socket.create_connection(
            (host, base.port or (443 if base.scheme == "https" else 80)), timeout=CONNECT_TIMEOUT_S
        ).close()
    except OSError:
        return "offline"
    return "online"


def _netrc_has(host: str) -> bool:
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(cfg: RunConfig, work_dir: Path) -> WandbLogger | None:
    """Lightning's W&B logger for a run, its W&B run started here, before any work, so that a
    refusal costs nothing; its files go under `WANDB_DIR` if set, else beside the run's CSV log.
    A run W&B fails to start is tried offline; if that fails too, None: the run goes on without W&B.
    Either way one warning says why."""
    failures = []
    for mode in dict.fromkeys([wandb_mode(), "offline"]):
        try:
            logger = _logger(cfg, work_dir, mode)
            _ = logger.experiment  # the property starts the W&B run (wandb.init)
        except Exception as err:  # whatever W&B raises (a 401, a timeout), tracking never ends a run
            failures.append(f"{mode}: {_one_line(err)}")
            continue
        if failures:
            warnings.warn(f"W&B failed ({failures[0]}): logging this run offline instead", stacklevel=2)
        return logger
    warnings.warn(f"W&B failed ({'; '.join(failures)}): this run goes on without it", stacklevel=2)
    return None


def _logger(cfg: RunConfig, work_dir: Path, mode: str) -> WandbLogger:
    import wandb

    logger = WandbLogger(
        project=cfg.logging.project,
        name=f"{cfg.run_name}-seed{cfg.data.seed}",
        group=f"{cfg.data.dataset}/{canonical_split(cfg.data.dataset, cfg.data.split)}",
        job_type=cfg.method,
        config=cfg.to_dict(),
        save_dir=os.environ.get("WANDB_DIR") or str(work_dir),
        # `mode`, not the logger's `offline=True`: that one sets WANDB_MODE for the whole process.
        mode=mode,
        settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True),
    )
    # Lightning passes `wandb.init(anonymous=None)`, which wandb answers on stderr with "The anonymous setting has
    # no effect and will be removed"; left out, wandb says nothing. (Lightning's arguments are a private dict: if
    # it keeps them elsewhere one day, the line comes back and nothing else changes.)
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def _one_line(err: Exception) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def finish_wandb(logger: WandbLogger, record: dict) -> str | None:
    """Put the record's accuracies and parameter count in the run's summary and close it; returns
    the `wandb sync` hint when the run was logged offline. A W&B failure here is a warning: the
    record is written already."""
    import wandb

    try:
        run = logger.experiment
        run.summary.update(
            {
                **{f"accuracy/{task}": value for task, value in record["accuracy"].items()},
                "trainable_params": record["trainable_params"],
            }
        )
        offline = run.settings.mode in ("offline", "dryrun")
        sync_dir = run.settings.sync_dir
        run.finish()
        # finish() returns before the W&B service has written the run's log; teardown waits for it, so
        # the numbers are on disk when the run returns (atexit would do it too, but not under every
        # launcher). The next W&B run in this process starts a fresh service.
        wandb.teardown()
    except Exception as err:  # the record is what counts
        warnings.warn(
            f"W&B failed to close the run ({_one_line(err)}): its summary may lack the record's numbers", stacklevel=2
        )
        return None
    return f"W&B run logged offline: upload it with `wandb sync {sync_dir}`" if offline else None
