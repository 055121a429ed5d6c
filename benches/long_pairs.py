#!/usr/bin/env python3
"""Writes preference pairs long enough that every sequence is cut at `--max-length 1024`, for
`VERDICT_BENCH_PAIRS_FILE=... benches/train_memory.sh SIZE lora 1024 2 1` (docs/training.md,
"1.5B LoRA at max length 1024"): a prompt of ~1,500 characters and answers of ~4,300, in English
and German, built from a card-dispute policy's sentences in a fixed pseudo-random order.

    python3 benches/long_pairs.py OUT.jsonl [PAIRS=4] [SEED=7]

Standard library only; the same arguments give the same file.
"""

import json
import random
import sys

SENTENCES = {
    "en": [
        "Our policy is to block the card immediately, open a dispute, and issue a provisional credit within ten business days.",
        "The cardholder reported an unrecognised payment of 249 euros made abroad on a weekday evening.",
        "Customers must never share their PIN, one-time passcodes or full card number with anyone who calls them.",
        "If the payment was made with the physical card, we also ask whether the card is still in the customer's possession.",
        "A replacement card is sent by post and arrives within five working days; the old number stops working at once.",
        "Disputes about online purchases need the merchant's name, the date and the amount exactly as the statement shows them.",
    ],
    "de": [
        "Wir sperren die Karte sofort, eröffnen eine Reklamation und schreiben den Betrag innerhalb von zehn Bankarbeitstagen vorläufig gut.",
        "Der Karteninhaber meldete eine unbekannte Zahlung über 249 Euro, die an einem Abend im Ausland getätigt wurde.",
        "Kundinnen und Kunden dürfen ihre PIN oder Einmalcodes niemals am Telefon weitergeben, auch nicht an angebliche Bankmitarbeiter.",
        "Wurde mit der physischen Karte bezahlt, fragen wir außerdem, ob sich die Karte noch im Besitz der Kundin befindet.",
        "Die Ersatzkarte kommt per Post innerhalb von fünf Werktagen; die alte Kartennummer ist ab sofort ungültig.",
        "Für Reklamationen von Online-Käufen brauchen wir den Händlernamen, das Datum und den Betrag genau wie auf dem Kontoauszug.",
    ],
}


def text(rng: random.Random, language: str, characters: int) -> str:
    out = []
    while sum(len(s) + 1 for s in out) < characters:
        out.append(rng.choice(SENTENCES[language]))
    return " ".join(out)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 7)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(pairs):
            language = ["en", "de"][i % 2]
            row = {
                "prompt": text(rng, language, 1500),
                "chosen": text(rng, language, 4300),
                "rejected": text(rng, language, 4200),
                "split": "train",
                "language": language,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {pairs} pairs to {path}")


if __name__ == "__main__":
    main()
