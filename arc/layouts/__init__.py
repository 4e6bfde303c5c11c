"""Row layouts: how an ARC example becomes a token row, one class per layout (arc.layouts.rows).

LAYOUTS maps each layout's name (TrainConfig.layout, saved in every checkpoint) to its class; a class's
`options` are the TrainConfig fields that only it reads.
"""
from arc.layouts.rows import InContextRows, PairRows

LAYOUTS = {cls.name: cls for cls in (PairRows, InContextRows)}
