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
METHODS.register("caser", "methods.caser:Caser")
METHODS.register("caser-bce", "methods.caser:CaserBCE")
METHODS.register("bert4rec", "methods.bert4rec:BERT4Rec")
METHODS.register("gru4rec", "methods.gru4rec:GRU4Rec")
METHODS.register("gru4rec-top1", "methods.gru4rec:GRU4RecTOP1")
METHODS.register("hgn", "methods.hgn:HGN")
METHODS.register("hgn-bpr", "methods.hgn:HGNBPR")
METHODS.register("lightgcn", "methods.lightgcn:LightGCN")
METHODS.register("ials", "methods.ials:IALS")
METHODS.register("tiger", "methods.tiger:TIGER")
METHODS.register("tiger-rkmeans", "methods.tiger:TIGERRKMeans")
METHODS.register("bloger", "methods.bloger:BLOGER")
METHODS.register("bloger-no-gs", "methods.bloger:BLOGERNoGS")
METHODS.register("bloger-letter", "methods.bloger:BLOGERLetter")
METHODS.register("tiger-letterindex", "methods.tiger:TIGERLetterIndex")
METHODS.register("p5-cid", "methods.p5cid:P5CID")
METHODS.register("letter-tiger", "methods.letter:LETTER")
METHODS.register("letter-base", "methods.letter:LetterBase")
METHODS.register("tiger-cr", "methods.letter:TigerCR")
METHODS.register("tiger-dr", "methods.letter:TigerDR")
METHODS.register("tiger-cr-dr", "methods.letter:TigerCRDR")
METHODS.register("lc-rec", "methods.lcrec:LCRec")
METHODS.register("rpg", "methods.rpg:RPG")
METHODS.register("univa", "methods.univa:UniVA")
METHODS.register("univa-no-rl", "methods.univa:UniVANoRL")
METHODS.register("univa-no-value-head", "methods.univa:UniVANoValueHead")
METHODS.register("univa-beta0", "methods.univa:UniVABeta0")
METHODS.alias("letter", "letter-tiger")
