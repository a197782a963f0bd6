"""The torchreid ``scripts/main.py`` workflow for MPN and the baselines: the command line
(``mpn-train``, ``tools/train.py``) and the run.

The objects of a run are built from the config by :mod:`mpn_plugin.build`. Models of the MPN
family are built from ``cfg.mpn``; any other torchreid model name (``pcb_p6``, ``resnet50``,
``osnet_x1_0``...) is built by torchreid's factory and trained by torchreid's own engines
(``engine.name: softmax | triplet``) on the same data and test protocol.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time
from typing import List, Optional

import torch

from . import compat, distributed
from .build import (
    build_datamanager,
    build_engine,
    build_model,
    build_optimizer,
    build_prior_options,
    build_scheduler,
    load_config,
    resolve_num_instances,
)
from .config import engine_run_kwargs
from .data import register_prior_datasets
from .data.image_check import check_dataset_images
from .data.sampler_check import identity_sampler_warning
from .environment import device_name
from .file_io import write_json
from .models import MPN


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train/evaluate MPN (or a torchreid baseline) with torchreid",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config-file", type=str, default="", help="path to a YAML config")
    parser.add_argument("-s", "--sources", type=str, nargs="+", help="source datasets")
    parser.add_argument("-t", "--targets", type=str, nargs="+", help="target datasets")
    parser.add_argument("--root", type=str, default="", help="root of the datasets")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides, e.g. train.max_epoch 10 mpn.num_parts 4 (after "
                             "-s/-t, separate them with --: -t market1501 -- train.max_epoch 1)")
    return parser


def setup_cfg(args: argparse.Namespace, check: bool = True):
    """The frozen config of parsed command-line arguments (:func:`build_parser`), through
    :func:`mpn_plugin.build.load_config` (``check``: its value checks)."""
    return load_config(args.config_file, args.opts or (), root=args.root, sources=args.sources,
                       targets=args.targets, check=check)


def main(argv: Optional[List[str]] = None) -> dict:
    """Run training and/or evaluation; returns the final results per target dataset."""
    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    dist_info = distributed.init_distributed()       # torchrun: join the process group
    rank = dist_info[0] if dist_info else 0
    compat.utils.set_random_seed(cfg.train.seed + rank)  # DDP broadcasts rank 0's weights
    if rank != 0:                                     # rank 0 alone logs
        with open(os.devnull, "w") as null:
            sys.stdout = null
            try:
                return _run(cfg, dist_info)
            finally:
                sys.stdout = sys.__stdout__
                distributed.cleanup()
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    log_name = "test.log" if cfg.test.evaluate else "train.log"
    console = sys.stdout
    log_file = osp.join(cfg.data.save_dir, log_name + time.strftime("-%Y-%m-%d-%H-%M-%S"))
    with open(log_file, "w") as f:
        # torchreid's Logger closes the console when garbage-collected: use a plain tee
        sys.stdout = _Tee(console, f)
        try:
            return _run(cfg, dist_info)
        finally:
            sys.stdout = console
            distributed.cleanup()


class _Tee:
    """Write to the console and a log file."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, msg):
        for s in self.streams:
            s.write(msg)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


class _NullWriter:
    """Stands in for torchreid's SummaryWriter on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


def evaluate_readouts(engine, readouts, run_kwargs) -> dict:
    """Evaluate the engine's trained MPN once per test-time readout (``test.extra_readouts``;
    :data:`~mpn_plugin.models.mpn.READOUTS`), with the run's test protocol; the model's own
    readout is restored afterwards. Readouts the model cannot give (e.g. ``concat`` for the
    Baseline) and non-MPN models are left out.

    Returns:
        dict: readout -> {target dataset -> {"rank1", "mAP", ...}}.
    """
    model = engine.unwrapped_model
    if not isinstance(model, MPN):
        return {}
    own, kept, out = model.readout, dict(engine.last_results), {}
    test_kwargs = {k: run_kwargs[k] for k in ("dist_metric", "normalize_feature", "save_dir",
                                              "use_metric_cuhk03", "ranks", "rerank")}
    try:
        for readout in readouts:
            try:
                model.readout = readout
            except ValueError as e:
                print(f"[readouts] {readout}: left out ({e})")
                continue
            print(f"[readouts] test.readout {readout}")
            engine.test(**test_kwargs)
            out[readout] = dict(engine.last_results)
    finally:
        model.readout = own
        engine.last_results.clear()                 # the run's own results, in place
        engine.last_results.update(kept)
    for readout, res in out.items():
        for name, r in res.items():
            print(f"[readouts] {readout:<10} [{name}] Rank-1 {r['rank1']:.1%}  mAP {r['mAP']:.1%}")
    return out


def _run(cfg, dist_info=None) -> dict:
    use_gpu = torch.cuda.is_available()
    print(f"Show configuration\n{cfg}\n")
    print(f"torchreid layout: {compat.LAYOUT}; use_gpu: {use_gpu}; torch {torch.__version__}")

    register_prior_datasets(build_prior_options(cfg))
    cfg = resolve_num_instances(cfg, use_gpu)
    datamanager = build_datamanager(cfg, use_gpu)
    skipped = check_dataset_images(datamanager, cfg.data.corrupt_images, cfg.data.save_dir,
                                   workers=max(1, cfg.data.workers),
                                   write_list=distributed.is_main_process())
    if skipped:                      # data.corrupt_images skip: the same data without them
        datamanager = build_datamanager(cfg, use_gpu, excluded_images=skipped)
    if cfg.sampler.train_sampler == "RandomIdentitySampler":
        warning = identity_sampler_warning(datamanager.train_loader.dataset.train,
                                           cfg.sampler.num_instances)
        if warning:
            print(f"WARNING: {warning}")
    if cfg.test.multi_query != "none":   # fail before training, not at the first evaluation
        from .evaluation.multi_query import gt_bbox_dir
        for name in cfg.data.targets:
            gt_bbox_dir(datamanager.test_loader[name]["query"].dataset, cfg.test.multi_query, name)

    model = build_model(cfg, datamanager.num_train_pids)
    num_params, flops = compat.utils.compute_model_complexity(
        model, (1, 3, cfg.data.height, cfg.data.width))
    print(f"Model complexity: params={num_params:,} flops={flops:,}")
    if cfg.model.load_weights:
        compat.load_model_weights(model, cfg.model.load_weights)
    if use_gpu:
        model = model.cuda(dist_info[2] if dist_info else None)

    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    run_kwargs = engine_run_kwargs(cfg)
    if cfg.model.resume:
        run_kwargs["start_epoch"] = compat.resume_from_checkpoint(
            cfg.model.resume, model, optimizer=optimizer, scheduler=scheduler)

    print(f"Building {cfg.engine.name}-engine for image-reid")
    engine = build_engine(cfg, datamanager, model, optimizer, scheduler, use_gpu=use_gpu)
    if dist_info:
        # checkpoints and evaluation use the unwrapped model; the training step uses DDP
        rank, world, local_rank = dist_info
        engine.model = distributed.wrap_model(model, local_rank, cfg.train.sync_bn)
        engine.train_loader = distributed.distributed_train_loader(
            engine.train_loader, cfg.train.batch_size, cfg.sampler.num_instances, cfg.train.seed)
        print(f"DistributedDataParallel: {world} processes ({'nccl' if use_gpu else 'gloo'}), "
              f"{cfg.train.batch_size} images per process and step, "
              f"{len(engine.train_loader)} steps per epoch")
        if rank != 0:
            engine.writer = _NullWriter()
    start = time.time()
    engine.run(**run_kwargs)
    wall = round(time.time() - start, 1)
    results = {"wall_time_s": wall, "results": dict(engine.last_results),
               "loss_history": getattr(engine, "loss_history", []),
               "world_size": dist_info[1] if dist_info else 1, "skipped_images": skipped,
               "device": device_name(use_gpu)}
    if cfg.test.extra_readouts and (not dist_info or dist_info[0] == 0):
        results["readouts"] = evaluate_readouts(engine, cfg.test.extra_readouts, run_kwargs)
    if dist_info and dist_info[0] != 0:
        return results
    # atomic: a results.json marks a finished run (the experiment runners' resume rule)
    write_json(osp.join(cfg.data.save_dir, "results.json"), results)
    for name, r in engine.last_results.items():
        print(f"[{name}] Rank-1 {r['rank1']:.1%}  mAP {r['mAP']:.1%}  "
              f"(chance Rank-1 {r['chance_rank1']:.1%}, {r['num_query_ids']} query identities)")
    return results
