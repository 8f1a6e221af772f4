from emotion_ops.cli import app

app(prog_name="emotion-ops")
