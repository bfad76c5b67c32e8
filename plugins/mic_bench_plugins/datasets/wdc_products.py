"""`wdc_products`: WDC Products and the older WDC LSPC (Large-Scale Product Corpus) pair files.

JSON lines (``.json`` or ``.json.gz``), one labelled pair per line: ``id_left``,
``title_left``, ... (brand, description, price, priceCurrency, cluster_id), the same fields
with ``_right``, ``label`` (0/1), and often ``pair_id`` and ``is_hard_negative``. Train,
validation and test (the gold standard) come as separate files. LSPC v2 ships its validation
set as a CSV of ``pair_id`` values drawn from the training file (``valid_pair_ids``).

Both sides are offers of one corpus, so an offer id means the same offer on either side and
in every file; an id whose attributes differ between lines is refused (or the first kept).
Lines are parsed with the json module, never evaluated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from bench.data.catalog import Catalog
from bench.config.data_paths import DATA_PATH
from bench.data.checks import resolve_user_path
from bench.errors import BenchError
from bench.data.pair_table import PAIR_SCHEMA
from bench.api.registry import PluginSpec

from .pair_labels import (CONFLICTING_PAIRS_HELP, CROSS_SPLIT_PAIRS_HELP, ConflictingPairs, CrossSplitPairs,
                          bad_label, join_text, parse_pair_label, resolve_repeated_pairs, settle_pairs)
from .table_files import decode_text, json_object, read_table

FILES = {"train": "train", "valid": "dev", "test": "test"}


class WdcProductsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str = Field(json_schema_extra=DATA_PATH, description="training pairs, JSON lines (.json or .json.gz)")
    valid: str | None = Field(None, json_schema_extra=DATA_PATH, description="validation pairs (the dev split), JSON lines")
    test: str = Field(json_schema_extra=DATA_PATH, description="test pairs (the gold standard), JSON lines")
    valid_pair_ids: str | None = Field(None, json_schema_extra=DATA_PATH,
                                       description="LSPC: a CSV with a pair_id column naming the training "
                                                   "pairs that form the validation set")
    title: list[str] = Field(["title"], min_length=1, description="offer attributes joined (by spaces) into the "
                                                                  "title, e.g. [brand, title]; each read as NAME_left "
                                                                  "and NAME_right")
    conflicting_offers: Literal["error", "keep_first"] = Field(
        "error", description="an offer id whose title differs between lines: error, or keep the first")
    conflicting_pairs: ConflictingPairs = Field("error", description=CONFLICTING_PAIRS_HELP)
    cross_split_pairs: CrossSplitPairs = Field("error", description=CROSS_SPLIT_PAIRS_HELP)


class Offers:
    """Offer id -> title, and where it was first seen (to name both lines of a conflict)."""

    def __init__(self, policy: str):
        self.policy = policy
        self.titles: dict[str, str] = {}
        self.first: dict[str, str] = {}
        self.conflicts = 0

    def add(self, offer_id: str, title: str, where: str, file: str) -> None:
        known = self.titles.get(offer_id)
        if known is None:
            self.titles[offer_id], self.first[offer_id] = title, where
        elif known != title:
            if self.policy == "error":
                raise BenchError(f"{where}: offer {offer_id} has the title {title!r}, but {self.first[offer_id]} gave "
                                 f"it {known!r}", file=file, field="id",
                                 fix="one id must describe one offer; fix the file, or set conflicting_offers: "
                                     "keep_first")
            self.conflicts += 1


def _offer_id(value, *, file: str, where: str, field: str) -> str:
    if value is None or isinstance(value, (dict, list, bool)) or str(value).strip() == "":
        raise BenchError(f"{where}: {field} is missing or not an id ({value!r})", file=file, field=field,
                         fix="every pair needs id_left and id_right (or remove the line)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def read_pair_file(path: Path, split: str, opts: WdcProductsOptions, offers: Offers,
                   keep: set[str] | None = None) -> tuple[list[dict], list[dict]]:
    """(pairs, pairs moved to dev by valid_pair_ids) of one JSON-lines file."""
    text = decode_text(path)  # inflated in blocks and bounded; a corrupt, cut or bomb .gz is a BenchError
    file = str(path)
    pairs, moved = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json_object(line)
        except ValueError as exc:
            raise BenchError(f"{where} is not valid JSON ({exc})", file=file, field=where,
                             fix="one JSON object per line (the WDC files are JSON lines); repair or remove the line") from None
        if not isinstance(record, dict):
            raise BenchError(f"{where} is a JSON {type(record).__name__}, not an object", file=file, field=where,
                             fix="one JSON object per line, with id_left, id_right, label and the offer attributes")
        ids = [_offer_id(record.get(f"id_{side}"), file=file, where=where, field=f"id_{side}") for side in ("left", "right")]
        label = parse_pair_label(record.get("label"))
        if label is None:
            raise bad_label(record.get("label"), file=file, where=where)
        for side, offer in zip(("left", "right"), ids):
            offers.add(offer, join_text([record.get(f"{name}_{side}") for name in opts.title]), where, file)
        pair = {"left_id": ids[0], "right_id": ids[1], "label": label, "split": split, "_file": file, "_row": number}
        pair_id = str(record.get("pair_id") or f"{ids[0]}#{ids[1]}")
        if keep is not None and pair_id in keep:
            moved.append({**pair, "split": "dev", "pair_id": pair_id})
        else:
            pairs.append(pair)
    if not pairs and not moved:
        raise BenchError("the file holds no pairs", file=file, fix="point the option at a WDC pair file (JSON lines)")
    return pairs, moved


def load(opts: WdcProductsOptions, ctx=None) -> Catalog:
    if opts.valid and opts.valid_pair_ids:
        raise BenchError("both valid and valid_pair_ids are given", field="valid_pair_ids",
                         fix="WDC Products ships a valid file, LSPC a list of pair ids: keep the one your release has")
    keep = None
    if opts.valid_pair_ids:
        ids_path = resolve_user_path(opts.valid_pair_ids, option="valid_pair_ids")
        frame, _ = read_table(ids_path, fmt="csv")
        if "pair_id" not in frame.columns:
            raise BenchError(f"no pair_id column; the columns are: {', '.join(frame.columns)}", file=str(ids_path),
                             field="valid_pair_ids", fix="the validation list needs a pair_id column")
        keep = set(frame["pair_id"].drop_nulls().str.strip_chars().to_list())
    offers = Offers(opts.conflicting_offers)
    rows, notes = [], {}
    train_path = resolve_user_path(opts.train, option="train")
    for option, split in FILES.items():
        if getattr(opts, option) is None:
            continue
        path = resolve_user_path(getattr(opts, option), option=option)
        pairs, moved = read_pair_file(path, split, opts, offers, keep if option == "train" else None)
        rows += pairs + [{k: v for k, v in m.items() if k != "pair_id"} for m in moved]
        if keep is not None and option == "train":
            found = {m["pair_id"] for m in moved}
            if keep - found:
                raise BenchError(f"{len(keep - found)} pair id(s) of the validation list are not in the training file "
                                 f"(e.g. {sorted(keep - found)[0]})", file=opts.valid_pair_ids, field="pair_id",
                                 fix=f"use the validation list that belongs to {train_path.name}")
    if offers.conflicts:
        notes["conflicting_offers_kept_first"] = offers.conflicts
    items = pl.DataFrame({"item_id": list(offers.titles), "title": list(offers.titles.values())},
                         schema={"item_id": pl.Utf8, "title": pl.Utf8})
    pairs = resolve_repeated_pairs(pl.DataFrame(rows, schema={**PAIR_SCHEMA, "_file": pl.Utf8, "_row": pl.Int64}),
                                   notes, locate=lambda file, number: f"line {number}",
                                   conflicting=opts.conflicting_pairs, cross_split=opts.cross_split_pairs)
    pairs = settle_pairs(pairs, items["item_id"], notes)
    return Catalog(name="wdc_products", items=items, source=str(train_path), notes=notes, pairs=pairs)


SPECS = [PluginSpec("dataset", "wdc_products",
                    "WDC Products / WDC LSPC labelled offer pairs (JSON lines, .json.gz): task pairs",
                    load, WdcProductsOptions)]
