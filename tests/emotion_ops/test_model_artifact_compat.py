"""Model versions registered before the re-plan pickled their pyfunc class as
``emotion_ops.model_artifact.EmotionClassifierPyfunc``; unpickling that name must still work."""

from __future__ import annotations

import pickle

from core.artifact import EmotionClassifierPyfunc


def test_the_old_pyfunc_class_path_unpickles_to_the_current_class():
    # A class pickles as a reference (module, name); protocol 0 writes it as plain text.
    old_reference = pickle.dumps(EmotionClassifierPyfunc, protocol=0).replace(
        b"core.artifact", b"emotion_ops.model_artifact"
    )
    assert pickle.loads(old_reference) is EmotionClassifierPyfunc
