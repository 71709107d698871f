"""The documents behind real_smollm2_v2.jsonl: lists, enumerations, counting, tables and forms (with
legitimate repetition), multilingual prompts (pt/es/de/fr/it), raw continuations, transcription of
passages (with a reference) and open chat questions. Written by hand for the detector's labelled set.

    python bench/data/make_docs2.py > docs_v2.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT = {
    "list": [
        "List 20 fruits, numbered.",
        "Name the days of the week, one per line.",
        "List the twelve months of the year with the number of days in each.",
        "Give me a numbered list of 15 animals that live in the ocean.",
        "List 10 countries in Europe and their capitals.",
        "Write a shopping list for a week of healthy meals.",
        "List the planets of the solar system in order from the sun.",
        "Give 12 tips for studying for an exam.",
        "Write the steps to make a cup of tea, numbered.",
        "List 25 common English verbs.",
        "Name 10 famous scientists and what they discovered.",
        "List the colors of the rainbow.",
        "Give me a list of 30 baby names.",
        "Make a packing list for a beach holiday.",
        "List every weekday with one chore to do on it, for two weeks.",
        "Write a to-do list for moving to a new apartment.",
        "List 15 programming languages and the year each appeared.",
        "Give me 20 words that rhyme with 'cat'.",
    ],
    "counting": [
        "Count from 1 to 20.",
        "Count by fives from 5 to 100.",
        "Write the numbers from one to thirty in words.",
        "Write the multiplication table of 7 from 7 x 1 to 7 x 12.",
        "Count down from 15 to 0.",
        "List the even numbers between 1 and 50.",
        "Write the first 15 square numbers.",
    ],
    "table": [
        "Make a markdown table of 6 countries with their capital, population and currency.",
        "Create a blank registration form with the fields Name, Address, City, Phone, Email and Date of "
        "birth, each followed by a line of underscores.",
        "Write a CSV file with 10 students: name, age, grade.",
        "Make a weekly class timetable as a markdown table, Monday to Friday, periods 1 to 5.",
        "Write an invoice with 5 line items (item, quantity, unit price, total).",
        "Create a table of the first 10 elements of the periodic table with symbol and atomic number.",
        "Write a JSON array of 5 books, each with title, author and year.",
        "Make a monthly budget table with categories and amounts.",
    ],
    "multilingual": [
        "Liste 15 frutas em português, numeradas.",
        "Escreva os dias da semana em português.",
        "Conte de 1 a 20 em português, por extenso.",
        "Escribe una lista de 10 animales en español.",
        "Escribe los meses del año en español.",
        "Explica en español qué es la fotosíntesis.",
        "Schreibe eine Liste von 10 Tieren auf Deutsch.",
        "Nenne die Wochentage auf Deutsch.",
        "Erkläre auf Deutsch, wie ein Computer funktioniert.",
        "Écris une liste de courses en français.",
        "Donne les jours de la semaine en français.",
        "Explique en français pourquoi le ciel est bleu.",
        "Scrivi i mesi dell'anno in italiano.",
        "Scrivi una lista di 10 cibi italiani.",
        "Descreva a cidade de Lisboa em português.",
        "Escribe una receta de tortilla de patatas.",
    ],
    "chat": [
        "Explain what a for loop is in Python.",
        "Write a short poem about the sea.",
        "What is the difference between a virus and a bacterium?",
        "Write a short story about a robot who learns to paint.",
        "Explain how a bill becomes a law.",
        "Describe the water cycle.",
        "What are the benefits of regular exercise?",
        "Write an email asking my manager for a day off.",
    ],
}

STRUCTURED = [
    "| Day | Opens | Closes |\n|---|---|---|\n| Monday | 9:00 | 17:00 |\n"
    "| Tuesday | 9:00 | 17:00 |\n| Wednesday | 9:00 | 17:00 |\n| Thursday | 9:00 | 17:00 |\n"
    "| Friday | 9:00 | 15:00 |\n| Saturday | closed | closed |",
    "Name: ____________________\nAddress: ____________________\nCity: ____________________\n"
    "Phone: ____________________\nEmail: ____________________\nSignature: ____________________",
    "1. Check the oil level.\n2. Check the tyre pressure.\n3. Check the brake fluid.\n4. Check the coolant.\n"
    "5. Check the lights.\n6. Check the wipers.\n7. Check the horn.",
    "Semana 1: correr 2 km\nSemana 2: correr 3 km\nSemana 3: correr 4 km\nSemana 4: correr 5 km\n"
    "Semana 5: correr 6 km\nSemana 6: correr 7 km",
    "Introduction ........ 1\nBackground ........ 3\nMethods ........ 7\nResults ........ 12\n"
    "Discussion ........ 18\nReferences ........ 22",
    "id,name,status\n1,alpha,ok\n2,beta,ok\n3,gamma,ok\n4,delta,ok\n5,epsilon,ok\n6,zeta,ok\n7,eta,ok",
]

RAW = [
    "Once upon a time, in a small village by the sea,",
    "The history of the Roman Empire begins",
    "1. Apples\n2. Bananas\n3.",
    "Monday: wake up at 7\nTuesday:",
    "Python is a programming language that",
    "Chapter 1\n\nThe rain had not stopped for three days when",
    "Ingredients:\n- 2 cups flour\n-",
    "Q: What is the capital of France?\nA:",
    "Era uma vez uma menina que morava",
    "La ciudad de Madrid es",
    "Die Geschichte Berlins beginnt",
    "Il était une fois un roi qui",
    "Table of contents\n1. Introduction\n2.",
    "Name: John Smith\nAge: 34\nCity:",
    "The quick brown fox",
    "In mathematics, a prime number is",
]


def main() -> None:
    rng = random.Random(2)
    docs = []
    for genre, prompts in CHAT.items():
        for i, prompt in enumerate(prompts):
            docs.append({"id": f"{genre}-{i}", "messages": [{"role": "user", "content": prompt}],
                         "meta": {"genre": genre}})
    for i, prompt in enumerate(RAW):
        docs.append({"id": f"raw-{i}", "prompt": prompt, "meta": {"genre": "raw_continuation"}})
    passages = [json.loads(line) for line in (Path(__file__).parent / "passages.jsonl").open()]
    unused = passages[:8] + passages[88:104]  # the old sets transcribed the others
    for i, passage in enumerate(rng.sample(unused, 14)):
        docs.append({"id": f"transcribe-{i}", "reference": passage["text"], "meta": {"genre": "transcribe"},
                     "messages": [{"role": "user", "content": "Transcribe the following text exactly, word "
                                   "for word:\n\n" + passage["text"]}]})
    for i, reference in enumerate(STRUCTURED):  # legitimate repetition that the reference has too
        docs.append({"id": f"transcribe-structured-{i}", "reference": reference,
                     "meta": {"genre": "transcribe_structured"},
                     "messages": [{"role": "user",
                                   "content": "Transcribe the following text exactly:\n\n" + reference}]})
    for doc in docs:
        print(json.dumps(doc, ensure_ascii=False))


if __name__ == "__main__":
    main()
