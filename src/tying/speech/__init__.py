"""`tying.speech`: words as concatenations of shared phone models.

A synthesized corpus (espeak-ng speakers + noise), log-mel/MFCC features, lexicons from
espeak-ng's phonemes, left-to-right phone HMMs with a batched log-space forward/Viterbi and
embedded Baum-Welch, and isolated-word recognition.
"""

from .corpus import SAMPLE_RATE as SAMPLE_RATE
from .corpus import Speaker as Speaker
from .corpus import Utterance as Utterance
from .corpus import add_noise as add_noise
from .corpus import make_speakers as make_speakers
from .corpus import split_by_speaker as split_by_speaker
from .corpus import synthesize as synthesize
from .corpus import synthesize_corpus as synthesize_corpus
from .features import FeatureConfig as FeatureConfig
from .features import log_mel as log_mel
from .features import mfcc as mfcc
from .hmm import PhoneHMMs as PhoneHMMs
from .hmm import forward_l2r as forward_l2r
from .hmm import viterbi_l2r as viterbi_l2r
from .lexicon import Lexicon as Lexicon
from .lexicon import espeak_phones as espeak_phones
from .recognize import accuracy as accuracy
from .recognize import featurize as featurize
from .recognize import from_hmmlearn as from_hmmlearn
from .recognize import recognize as recognize

__all__ = ["SAMPLE_RATE", "FeatureConfig", "Lexicon", "PhoneHMMs", "Speaker", "Utterance",
           "accuracy", "add_noise", "espeak_phones", "featurize", "forward_l2r", "from_hmmlearn",
           "log_mel", "make_speakers", "mfcc", "recognize", "split_by_speaker", "synthesize",
           "synthesize_corpus", "viterbi_l2r"]
