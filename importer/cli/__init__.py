"""What a person types and sees: commands, console output, the demo, the local stand-in,
plan and spec drafts."""
