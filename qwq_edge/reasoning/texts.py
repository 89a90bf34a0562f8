"""What the runtime itself writes into a thinking, in the answer's language.

Under a language guard the forced texts come in the guarded language: a Chinese
answer is not preceded by an English wrap-up, and a Chinese thinking is not
interrupted by an English "Wait". English is the default.

The wrap-up (forced when the budget is spent) does not ask for an answer "directly
now": after an early cut, a small model then states a number from unfinished
thinking. It says the thinking stops and that the answer works the solution through
step by step, as the model does when it answers without thinking (within the answer
bound); ``benchmarks/results/budget_eval.md`` has the measurement behind the wording.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeTexts:
    """The sentences the runtime forces: ``wrap_up`` before the forced end of the thinking,
    ``wait`` below the minimum, ``nudge`` when the thinking loops."""

    wrap_up: str
    wait: str
    nudge: str


TEXTS: dict[str, RuntimeTexts] = {
    "en": RuntimeTexts(
        wrap_up="Thinking time is up. In my answer I will work through the solution step by step and then state the "
        "final result.",
        wait="\n\nWait,",
        nudge="\n\nI keep repeating myself; let me try a different approach.\n\n",
    ),
    "zh": RuntimeTexts(
        wrap_up="思考时间到了。在回答中，我会一步一步地完成解答，然后给出最终结果。",
        wait="\n\n等等，",
        nudge="\n\n我一直在重复自己；让我换一种方法。\n\n",
    ),
    "ja": RuntimeTexts(
        wrap_up="考える時間は終わりです。回答の中で解答を一歩ずつ進め、最後に最終的な結果を示します。",
        wait="\n\n待って、",
        nudge="\n\n同じことを繰り返している。別の方法を試してみよう。\n\n",
    ),
    "ko": RuntimeTexts(
        wrap_up="생각할 시간이 끝났습니다. 답변에서 풀이를 단계별로 진행한 뒤 최종 결과를 제시하겠습니다.",
        wait="\n\n잠깐,",
        nudge="\n\n같은 말을 반복하고 있다. 다른 방법을 시도해 보자.\n\n",
    ),
    "ru": RuntimeTexts(
        wrap_up="Время на размышления вышло. В ответе я пошагово проведу решение, а затем назову окончательный "
        "результат.",
        wait="\n\nПодожди,",
        nudge="\n\nЯ повторяюсь; попробую другой подход.\n\n",
    ),
    "fr": RuntimeTexts(
        wrap_up="Le temps de réflexion est écoulé. Dans ma réponse, je déroulerai la solution étape par étape, puis "
        "j'indiquerai le résultat final.",
        wait="\n\nAttends,",
        nudge="\n\nJe me répète ; essayons une autre approche.\n\n",
    ),
    "de": RuntimeTexts(
        wrap_up="Die Denkzeit ist um. In meiner Antwort arbeite ich die Lösung Schritt für Schritt durch und nenne "
        "dann das Endergebnis.",
        wait="\n\nMoment,",
        nudge="\n\nIch wiederhole mich; ich versuche einen anderen Ansatz.\n\n",
    ),
    "es": RuntimeTexts(
        wrap_up="Se acabó el tiempo para pensar. En mi respuesta resolveré el problema paso a paso y luego daré el "
        "resultado final.",
        wait="\n\nEspera,",
        nudge="\n\nMe estoy repitiendo; probemos un enfoque diferente.\n\n",
    ),
}


def texts_for(language: str) -> RuntimeTexts:
    """The runtime's texts for a language code; English for ``off``, ``auto`` or an unknown code."""
    return TEXTS.get(language, TEXTS["en"])
