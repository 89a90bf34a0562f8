"""What the runtime itself writes into a thinking, in the answer's language.

Under a language guard the forced texts come in the guarded language: a Chinese
answer is not preceded by an English wrap-up, and a Chinese thinking is not
interrupted by an English "Wait". English is the default.

The wrap-up (forced when the budget is spent) does not ask for an answer "directly
now": after an early cut, a small model then states a number from unfinished
thinking. It says the thinking stops and lets the answer finish the reasoning
briefly; ``benchmarks/results/budget_eval.md`` has the measurement behind the wording.
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
        wrap_up="I am out of thinking time, so I stop here; in my answer I will briefly finish the reasoning and then "
        "give the final result.",
        wait="\n\nWait,",
        nudge="\n\nI keep repeating myself; let me try a different approach.\n\n",
    ),
    "zh": RuntimeTexts(
        wrap_up="思考时间已到，我在这里停止思考；在回答中我会简要完成推理，然后给出最终结果。",
        wait="\n\n等等，",
        nudge="\n\n我一直在重复自己；让我换一种方法。\n\n",
    ),
    "ja": RuntimeTexts(
        wrap_up="考える時間が終わったので、ここで考えるのをやめます。回答の中で推論を簡潔に仕上げてから、最終的な結果を示します。",
        wait="\n\n待って、",
        nudge="\n\n同じことを繰り返している。別の方法を試してみよう。\n\n",
    ),
    "ko": RuntimeTexts(
        wrap_up="생각할 시간이 다 되어 여기서 멈춥니다. 답변에서 추론을 간단히 마무리한 뒤 최종 결과를 제시하겠습니다.",
        wait="\n\n잠깐,",
        nudge="\n\n같은 말을 반복하고 있다. 다른 방법을 시도해 보자.\n\n",
    ),
    "ru": RuntimeTexts(
        wrap_up="Время на размышления вышло, поэтому я останавливаюсь здесь; в ответе я кратко завершу рассуждение "
        "и дам окончательный результат.",
        wait="\n\nПодожди,",
        nudge="\n\nЯ повторяюсь; попробую другой подход.\n\n",
    ),
    "fr": RuntimeTexts(
        wrap_up="Le temps de réflexion est écoulé, je m'arrête ici ; dans ma réponse, je terminerai brièvement le "
        "raisonnement, puis je donnerai le résultat final.",
        wait="\n\nAttends,",
        nudge="\n\nJe me répète ; essayons une autre approche.\n\n",
    ),
    "de": RuntimeTexts(
        wrap_up="Die Denkzeit ist um, also höre ich hier auf; in meiner Antwort schließe ich die Überlegung kurz ab "
        "und nenne dann das Endergebnis.",
        wait="\n\nMoment,",
        nudge="\n\nIch wiederhole mich; ich versuche einen anderen Ansatz.\n\n",
    ),
    "es": RuntimeTexts(
        wrap_up="Se acabó el tiempo para pensar, así que me detengo aquí; en mi respuesta terminaré brevemente el "
        "razonamiento y luego daré el resultado final.",
        wait="\n\nEspera,",
        nudge="\n\nMe estoy repitiendo; probemos un enfoque diferente.\n\n",
    ),
}


def texts_for(language: str) -> RuntimeTexts:
    """The runtime's texts for a language code; English for ``off``, ``auto`` or an unknown code."""
    return TEXTS.get(language, TEXTS["en"])
