"""Errors whose message says which parameter of the call would fix them.

The library words such a parameter as a Python caller writes it (``allow_hub_clip=True``): ``str(error)``. A front
end that takes the same setting under another name (a command line's ``--allow-hub-clip``) words the same message
with its own names: ``error.worded({"allow_hub_clip": "--allow-hub-clip"})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    """A parameter a message names: ``name`` is the keyword parameter of the library's functions (the key a front
    end maps to its own name), ``python`` how the message words it for a Python caller."""

    name: str
    python: str


class ParameterHint(Exception):
    """An exception whose message is built of text and :class:`Parameter` parts. ``str()`` words the parameters as
    Python does; :meth:`worded` with a front end's names. ``parameters``: the names it mentions."""

    def __init__(self, *parts: str | Parameter) -> None:
        self.parts = tuple(parts)
        super().__init__(self.worded())

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Parameter))

    def worded(self, names: Mapping[str, str] | None = None) -> str:
        """The message, each parameter named as ``names`` maps it (the Python wording where it does not)."""
        names = names or {}
        return "".join(part if isinstance(part, str) else names.get(part.name, part.python) for part in self.parts)

    def __reduce__(self) -> tuple:
        """Pickled (a worker process' error, ``copy.copy``) from its parts and attributes: Exception's own pickling
        calls the class with its message, which a subclass taking other arguments (``UntrustedClipError(problem)``)
        would word again ("...download it; pass allow_hub_clip=True to let open_clip download it")."""
        return _restored, (type(self), self.parts), self.__dict__


def _restored(cls: type[ParameterHint], parts: tuple[str | Parameter, ...]) -> ParameterHint:
    """A ``cls`` with the message of ``parts``, made without calling ``cls.__init__`` (see ``__reduce__``)."""
    error = cls.__new__(cls)
    ParameterHint.__init__(error, *parts)
    return error


__all__ = ["NonFiniteOutputError", "Parameter", "ParameterHint"]


class VocabularyError(ValueError):
    """Class names a predictor cannot classify with (none, an empty one, an empty synonym, a duplicate): a front end
    names where the names came from (a command line's ``--vocab``, an evaluation's GT file), not the model."""



class NonFiniteOutputError(ValueError):
    """The network's outputs hold NaN or infinity on a frame: its weights are broken (saved by a training run that
    diverged), not the input (the tracker's assignment then failed with scipy's "matrix contains invalid numeric
    entries")."""

    def __init__(self) -> None:
        super().__init__("the model produced NaN or infinite values: its weights are broken (e.g. saved by a training "
                         "run whose loss diverged); use other weights")
