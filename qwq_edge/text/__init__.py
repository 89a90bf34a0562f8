"""Text utilities every layer shares: detokenizing, stop strings, answers, tool calls, chat templates."""
