"""Task families: one :class:`TaskFamily` per kind of task set, looked up by the name the
task set's class declares (``TaskSet.family``), so no stage branches on the kind."""

from grouping.families.base import OutputRows, TaskFamily
from grouping.families.binary import BinaryLabelFamily
from grouping.families.instructions import InstructionFamily
from grouping.tasksets import AnyTaskSet

FAMILIES: dict[str, TaskFamily] = {family.name: family for family in (
    BinaryLabelFamily(), InstructionFamily())}


def family_of(taskset: AnyTaskSet) -> TaskFamily:
    """The family of ``taskset``'s kind."""
    return FAMILIES[taskset.family]


__all__ = ["FAMILIES", "BinaryLabelFamily", "InstructionFamily", "OutputRows", "TaskFamily",
           "family_of"]
