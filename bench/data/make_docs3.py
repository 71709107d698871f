"""The documents behind real_smollm2_v3b.jsonl: new prompts (none shared with docs_v2) in the genres
where loops were missed — transcription of plain prose (English, Portuguese, Spanish), lists and
enumerations, raw continuations — plus a few forms and counts with legitimate repetition. Written by
hand for the detector's labelled set; the passages are original text.

    python bench/data/make_docs3.py > docs_v3.jsonl
"""

from __future__ import annotations

import json

LISTS = [
    "List 15 vegetables, numbered.",
    "Name the seven continents, one per line.",
    "Give me a numbered list of 20 musical instruments.",
    "List 10 cities in South America with their countries.",
    "Write a list of 12 things to pack for a camping trip.",
    "List the first ten presidents of the United States.",
    "Give 10 synonyms for the word 'happy'.",
    "Name 15 birds, one per line.",
    "List the months of the year and one holiday in each.",
    "Write a numbered list of 8 household chores for each day from Monday to Sunday.",
    "List 20 sports played with a ball.",
    "Give me a numbered list of 10 famous paintings and their painters.",
    "List the steps to change a flat tyre.",
    "Name 12 kinds of trees.",
    "Liste 12 animais da fazenda em português, numerados.",
    "Escreva uma lista de compras para um jantar de família.",
    "Enumera 10 profesiones en español.",
    "Escribe los números del 1 al 15 en español, uno por línea.",
    "Lista 8 ríos de Sudamérica.",
    "Escreva os meses do ano com uma fruta da estação para cada um.",
]

COUNTS_AND_FORMS = [
    "Count from 10 to 40 by twos.",
    "Write the multiplication table of 9 from 9 x 1 to 9 x 10.",
    "Make a weekly meal plan as a list: each day from Monday to Sunday with breakfast, lunch and dinner.",
    "Create a blank job application form with 8 fields, each followed by a line of underscores.",
    "Write a markdown table of 5 fruits with their colour and price.",
    "Write an attendance sheet for 6 students, Monday to Friday, marking each day present or absent.",
]

RAW = [
    "The old lighthouse keeper climbed the stairs every evening,",
    "My favourite recipe for bread is simple:",
    "Shopping list:\n1. Milk\n2.",
    "The three rules of the library are",
    "Dear Sir or Madam,\n\nI am writing to",
    "Top 10 reasons to learn a new language:\n1.",
    "Minutes of the meeting, 4 March\nPresent:",
    "The weather forecast for the week:\nMonday: sunny\nTuesday:",
    "Frequently asked questions\n\nQ: How do I reset my password?\nA:",
    "A minha avó sempre dizia que",
    "Receita de bolo de cenoura:\nIngredientes:\n-",
    "O Brasil é um país",
    "Había una vez un pescador que",
    "Los planetas del sistema solar son",
    "Lista de tareas para hoy:\n1.",
    "Step 1: Preheat the oven.\nStep 2:",
    "The committee met again on Thursday to discuss",
    "Glossary\n\nAlgorithm:",
    "Song lyrics:\n\nVerse 1\n",
    "In the beginning of the twentieth century, the city",
]

PASSAGES = [
    "The bakery on the corner opens at six. By seven there is already a queue of builders, nurses coming "
    "off the night shift and children on their way to school. The owner knows most of them by name and "
    "starts wrapping their usual order before they reach the counter. On Sundays she bakes a cinnamon loaf "
    "that sells out within an hour, and she has never once agreed to make more of it.",
    "When the river flooded in the spring, the whole lower town had to be evacuated. Families carried "
    "what they could up the hill to the school, where volunteers handed out blankets and soup. Most houses "
    "were dry again within two weeks, but the old mill never reopened. Its wheel still stands in the water, "
    "turning slowly whenever the current is strong enough.",
    "To plant a tomato seedling, dig a hole deeper than the pot it came in. Remove the lower leaves and set "
    "the plant in the hole so that most of the stem is buried; new roots will grow along it. Fill the hole, "
    "press the soil down gently and water well. Put a stake in at the same time, so that you do not damage "
    "the roots later.",
    "The museum's new wing holds three rooms. The first shows maps drawn by sailors in the sixteenth century, "
    "the second a collection of clocks, and the third a single painting of a harbour at dawn. Visitors are "
    "asked not to use flash photography. Guided tours start every hour from the main hall and last about "
    "forty minutes.",
    "A cidade acordou com neblina. Os pescadores saíram cedo, como sempre, e voltaram antes do meio-dia com "
    "os barcos cheios de sardinha. Na praça, as vendedoras arrumavam as bancas de frutas enquanto as crianças "
    "corriam atrás de um cachorro. À tarde o sol apareceu e a neblina desapareceu tão depressa quanto tinha "
    "chegado.",
    "Para fazer um bom café, aqueça a água até quase ferver. Coloque duas colheres de pó no filtro para cada "
    "xícara e despeje a água devagar, em círculos. Espere o café passar por completo antes de servir. Não "
    "deixe o café no fogo depois de pronto, porque ele fica amargo.",
    "El tren salió de la estación con veinte minutos de retraso. En el vagón comedor, un hombre leía el "
    "periódico mientras su hija dibujaba caballos en una servilleta. Afuera, los campos de trigo pasaban "
    "dorados bajo el sol de la tarde. Cuando llegaron a la costa ya era de noche y el mar apenas se veía.",
    "La biblioteca municipal abre de lunes a sábado. Para pedir un libro prestado hace falta el carné de "
    "socio, que se tramita gratis en el mostrador con un documento de identidad. Los libros se prestan por "
    "tres semanas y se pueden renovar una vez. Las revistas del mes no salen de la sala de lectura.",
    "Chapter Four\n\nNobody in the house heard the letter arrive. It lay on the mat all morning, face down, "
    "until the cat knocked it under the coat stand. When Clara finally found it, the stamp had been torn "
    "off and the address was smudged, but the handwriting was unmistakable. She sat down on the stairs and "
    "read it twice before she told anyone.",
    "Monday: team meeting at 9, project review at 14.\nTuesday: client call at 10.\nWednesday: no "
    "meetings.\nThursday: team meeting at 9, budget review at 15.\nFriday: demo at 11, retrospective at 16.",
    "Ingredients: 2 eggs, 200 g flour, 100 g sugar, 100 g butter, 1 teaspoon baking powder, a pinch of "
    "salt.\nMethod: Beat the butter and sugar. Add the eggs one at a time. Fold in the flour, baking "
    "powder and salt. Bake at 180 °C for 25 minutes.",
    "Q: Where is the nearest pharmacy?\nA: Two streets down, next to the bank.\nQ: Is it open on Sunday?\n"
    "A: Only in the morning.\nQ: Do they sell sunscreen?\nA: Yes, several kinds.",
]


def main() -> None:
    docs = []
    for genre, prompts in (("list", LISTS), ("counting", COUNTS_AND_FORMS)):
        for i, prompt in enumerate(prompts):
            docs.append({"id": f"b-{genre}-{i}", "messages": [{"role": "user", "content": prompt}],
                         "meta": {"genre": genre}})
    for i, prompt in enumerate(RAW):
        docs.append({"id": f"b-raw-{i}", "prompt": prompt, "meta": {"genre": "raw_continuation"}})
    for i, passage in enumerate(PASSAGES):
        docs.append({"id": f"b-transcribe-{i}", "reference": passage, "meta": {"genre": "transcribe"},
                     "messages": [{"role": "user", "content": "Transcribe the following text exactly, word "
                                   "for word:\n\n" + passage}]})
    for doc in docs:
        print(json.dumps(doc, ensure_ascii=False))


if __name__ == "__main__":
    main()
