"""Method implementations, one module per method, registered lazily by name.

To add a method: write ``methods/<name>.py`` with a :class:`bench.method.Method` subclass
and a ``@dataclass`` ``Config``, then register it below.
"""

from bench.registry import Registry

METHODS: Registry = Registry("method")
METHODS.register("pop", "methods.pop:Pop")
METHODS.register("mf", "methods.mf:MF")
METHODS.register("sasrec", "methods.sasrec:SASRec")
METHODS.register("sasrec-ce", "methods.sasrec:SASRecCE")
METHODS.register("tiger", "methods.tiger:TIGER")
METHODS.register("tiger-letterindex", "methods.tiger:TIGERLetterIndex")
METHODS.register("letter-tiger", "methods.letter:LETTER")
METHODS.register("tiger-cr", "methods.letter:TigerCR")
METHODS.register("tiger-dr", "methods.letter:TigerDR")
METHODS.register("tiger-cr-dr", "methods.letter:TigerCRDR")
