"""Options every reader shares: rare labels and a given split (split column or split file).

Readers mix these models into their own options, and ``finish_catalog`` applies them, so the
same option means the same thing, and fails with the same words, for every format.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .category_paths import LabelForm

RareLabels = Literal["drop", "other", "error"]
UnlistedItems = Literal["error", "drop"]


class LabelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_items_per_label: int | None = Field(None, ge=1, description="labels with fewer items are dropped, merged "
                                                                    "(rare_labels: other) or an error; null = keep all")
    rare_labels: RareLabels = Field("drop", description="what min_items_per_label does to a rarer label: drop its "
                                                       "items, merge them into other_label, or stop with an error")
    other_label: str = Field("other", min_length=1, description="the label rare labels merge into (rare_labels: other)")


class PathLabelOptions(LabelOptions):
    """For readers whose labels are category paths."""

    label_level: int | None = Field(None, ge=1, description="depth of the category path to keep (1 = top); "
                                                            "null = the whole path")
    label_form: LabelForm = Field("path", description="path: the label is the path down to label_level "
                                                      "('Home > Decor'); name: only the name at that level ('Decor')")


class GivenSplitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split_file: str | None = Field(None, description="a CSV/TSV with columns item_id,split that fixes every item's "
                                                     "split (relative: to the data's folder, else the working dir)")
    unlisted_items: UnlistedItems = Field("error", description="catalogue items the split file does not list: "
                                                               "error, or drop them (counted as dropped_unlisted_items)")
