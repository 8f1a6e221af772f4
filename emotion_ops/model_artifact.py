"""Where model versions registered before the re-plan (``core.artifact`` since) find their pyfunc
class: MLflow pickles the class by module path, so ``mlflow.pyfunc.load_model`` on such a version
imports this module. New versions name ``core.artifact`` directly."""

from core.artifact import EmotionClassifierPyfunc

__all__ = ["EmotionClassifierPyfunc"]
