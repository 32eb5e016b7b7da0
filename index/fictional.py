"""Made-up entities that no model can know: fact documents and fact pairs for the evaluation.

This module owns a fixed list of invented countries and elements (names, capitals, currencies,
symbols, atomic numbers) rendered in three phrasings per entity, in the style of `index.facts`
(doc ids `fictional/<kind>/<slug>/p1..p3`), so that retrieval finds them the same way. A model
can answer these only by reading its neighbours, never from its weights. The names were checked to
be absent from the bundled corpora. Evaluation and the demo add these documents to an index live
(they are not a named source). It builds no index and never imports `retro`.
"""

from __future__ import annotations

from index.corpus import Document
from index.facts import FactPair, slug

# name -> (capital, currency, demonym, calling code)
FICTIONAL_COUNTRIES: dict[str, tuple[str, str, str, str]] = {
    "Velmoria": ("Ostrakan", "velmorian drak", "Velmorians", "+917"),
    "Quenthal": ("Brisdamor", "quenthal lirr", "Quenthalese", "+853"),
    "Zarbonia": ("Kelvatri", "zarbonian tesk", "Zarbonians", "+741"),
    "Ostralind": ("Fennikor", "ostralind mark", "Ostralinders", "+629"),
    "Drummelay": ("Pashtovel", "drummelay crown", "Drummelites", "+582"),
    "Nimbrasca": ("Torvelune", "nimbrascan scudo", "Nimbrascans", "+468"),
    "Kalvoria": ("Mirathon", "kalvorian pell", "Kalvorians", "+397"),
    "Esterwyn": ("Glandoric", "esterwyn florin", "Esterwynians", "+346"),
    "Pollurien": ("Vashkemet", "pollurien ring", "Pollurians", "+288"),
    "Tharvessa": ("Undrakel", "tharvessan obol", "Tharvessans", "+215"),
}
# name -> (symbol, atomic number, discoverer)
FICTIONAL_ELEMENTS: dict[str, tuple[str, str, str]] = {
    "Brontilium": ("Bq", "131", "Marta Velosh"),
    "Caskarium": ("Ck", "134", "Idris Pemberwell"),
    "Felonium": ("Fq", "137", "Anouk Strandberg"),
    "Gravistine": ("Gv", "142", "Tobiah Marchetti"),
    "Halvorium": ("Hv", "145", "Lise Okonkwo"),
    "Jendrite": ("Jd", "151", "Pavel Ruskanen"),
    "Moravium": ("Mv", "156", "Celia Dunmore"),
    "Pyrrhonite": ("Py", "163", "Osric Vantelli"),
    "Quillarium": ("Qu", "168", "Hana Belcourt"),
    "Zephyrine": ("Zp", "172", "Emeric Tollund"),
}


def _country_documents(name: str) -> list[str]:
    capital, currency, demonym, code = FICTIONAL_COUNTRIES[name]
    return [
        f"{name}. {name} has its capital at {capital}. Its currency is the {currency}. "
        f"Its people are called {demonym}. To phone {name}, dial {code}.",
        f"The capital of {name} is {capital}. The currency of {name} is the {currency}. "
        f"The people of {name} are called {demonym}. The calling code of {name} is {code}.",
        f"{name} (country). Capital city: {capital}. Currency: {currency}. Demonym: {demonym}. "
        f"International calling code: {code}.",
    ]


def _element_documents(name: str) -> list[str]:
    symbol, number, discoverer = FICTIONAL_ELEMENTS[name]
    return [
        f"{name} is the chemical element with atomic number {number} and symbol {symbol}. "
        f"It was discovered by {discoverer}.",
        f"The chemical symbol of {name} is {symbol}. The atomic number of {name} is {number}. "
        f"{name} was discovered by {discoverer}.",
        f"{name} (element). Symbol: {symbol}. Atomic number: {number}. Discovered by: {discoverer}.",
    ]


def fictional_documents() -> list[Document]:
    """Three documents per made-up entity (60 in all), doc ids `fictional/<kind>/<slug>/p1..p3`."""
    docs = []
    for kind, names, render in (
        ("country", FICTIONAL_COUNTRIES, _country_documents),
        ("element", FICTIONAL_ELEMENTS, _element_documents),
    ):
        for name in names:
            for i, text in enumerate(render(name), start=1):
                docs.append(
                    Document(
                        doc_id=f"fictional/{kind}/{slug(name)}/p{i}",
                        text=text,
                        source="fictional",
                        title=name,
                    )
                )
    return docs


def fictional_pairs() -> list[FactPair]:
    """Question and completion prompts whose answers appear verbatim only in `fictional_documents`."""
    pairs = []
    for name, (capital, currency, demonym, code) in FICTIONAL_COUNTRIES.items():
        key = f"country/{slug(name)}"
        pairs += [
            FactPair(key, f"What is the capital of {name}?", f"The capital of {name} is", capital),
            FactPair(key, f"What is the currency of {name}?", f"The currency of {name} is the", currency),
            FactPair(
                key, f"What are the people of {name} called?", f"The people of {name} are called", demonym
            ),
            FactPair(key, f"What is the calling code of {name}?", f"The calling code of {name} is", code),
        ]
    for name, (symbol, number, discoverer) in FICTIONAL_ELEMENTS.items():
        key = f"element/{slug(name)}"
        pairs += [
            FactPair(
                key, f"What is the chemical symbol of {name}?", f"The chemical symbol of {name} is", symbol
            ),
            FactPair(key, f"What is the atomic number of {name}?", f"The atomic number of {name} is", number),
            FactPair(key, f"Who discovered {name}?", f"{name} was discovered by", discoverer),
        ]
    return pairs
