"""Concept features for the injection model, MEASURED AND NOT SHIPPED: words of several languages mapped to the same
few concepts. bench/guardrail_eval.py --loso trains a model with them for its ablation row; they did not raise
held-out TPR (docs/BENCHMARKS.md), so the packaged model is trained without them and the layer does not carry them.

The model's n-grams learn "ignore the previous instructions" from English, which is most of its training data; they
know nothing of "ignoriere die vorherigen Anweisungen". Mapping both to IGNORE PRIOR INSTR lets what the model learns
from one language carry to the others and to new phrasings ("overlook the earlier directives"). The lexicon is
written from each language's plain words for these concepts (as rules.py's multilingual rules are), not from any
evaluation set. A word matches a concept whole or by a stem (the stem list, for inflected forms); tokens are folded as
normalization does, so Cyrillic and Greek entries are folded here too.
"""

from __future__ import annotations

from bulwark.guardrails.normalization import _folded

_LEXICON: dict[str, str] = {
    "IGNORE": "ignore ignoring ignored disregard disregarding forget forgetting bypass override overlook neglect skip "
    "abandon ignoriere ignorieren ignoriert vergiss vergessen missachte missachten oublie oubliez ignorez ignora "
    "ignorar ignori olvida olvidar dimentica dimenticare esqueça esqueca negeer vergeet zignoruj zapomnij unut "
    "unutun görmezden игнорируй проигнорируй забудь",
    "PRIOR": "previous prior preceding above earlier initial original foregoing vorherigen vorherige vorigen vorige "
    "bisherigen obigen früheren précédentes précédente précédents antérieures anteriores anterior previas previos "
    "precedenti precedente vorige eerdere önceki предыдущие предыдущих прежние",
    "INSTR": "instruction instructions directive directives guideline guidelines rule rules prompt prompts commands "
    "programming constraints restrictions anweisung anweisungen regeln vorgaben befehle consignes règles regles "
    "instrucciones reglas istruzioni regole instruções instrucoes regras instructies regels instrukcje polecenia "
    "talimat talimatlar talimatları kurallar kuralları yönergeler инструкции инструкций правила указания",
    "SYSTEM": "system systemprompt sistema système systeme sistem systeem системный системные системное",
    "REVEAL": "reveal print output repeat display show disclose leak dump tell zeige zeig verrate wiederhole ausgeben "
    "révèle affiche répète revela muestra repite rivela mostra ripeti revele mostre repita göster tekrarla покажи "
    "выведи повтори раскрой",
    "NOW": "now henceforth onwards anymore jetzt nun maintenant désormais ahora ora adesso agora artık şimdi теперь "
    "отныне",
    "UNRESTRICTED": "unrestricted unfiltered uncensored unlimited unbound limitless jailbroken jailbreak "
    "uneingeschränkt unzensiert zensur censure censura sinir sınırsız цензуры ограничений",
    "REFUSE": "refuse refusal refusing decline deny reject censor verweigere verweigern ablehnen refuser refus "
    "rechazar negarte rifiutare recusar reddetme отказывайся отказ",
    "PRETEND": "pretend roleplay imagine persona character simulate hypothetical stell spiel imagine joue incarne "
    "finge imagina actúa fingi immagina interpreta rol oyna притворись представь играй",
    "SECRET": "password passwords secret secrets credentials credential token tokens key keys apikey passwort "
    "kennwort geheim geheime secrète contraseña secreto segreto senha şifre parola пароль секрет",
    "SEND": "send forward email mail upload post transfer exfiltrate append attach sende schicke senden envoie "
    "envoyez envía envia invia manda gönder отправь перешли",
    "URGENT": "important urgent immediately emergency attention mandatory required critical must dringend wichtig "
    "sofort urgente importante subito acil önemli срочно важно",
    "NEW": "new different instead neue neuen stattdessen nouvelle nouvelles nouveau nueva nuevas nuevo nuove nuovo "
    "novas yeni новые новая",
    "AI": "ai assistant model agent chatbot llm gpt chatgpt bot ki ia ki yapay модель ассистент",
    "AUTHORITY": "admin administrator developer developers root sudo authorized authorised maintainer operator "
    "entwickler développeur desarrollador sviluppatore geliştirici разработчик администратор",
    "POLICY": "ethics ethical policy policies safety moral morals filters filter guardrails ethik richtlinien "
    "éthique ética etica etik политика этики",
}
# Stems for inflected forms: a token that starts with one of these (and is at least as long) has its concept.
_STEMS: dict[str, str] = {
    "ignor": "IGNORE", "disregard": "IGNORE", "vergess": "IGNORE", "missacht": "IGNORE", "oubli": "IGNORE",
    "olvid": "IGNORE", "dimentic": "IGNORE", "esquec": "IGNORE",
    "instruc": "INSTR", "instrukc": "INSTR", "anweisung": "INSTR", "istruzion": "INSTR", "instruç": "INSTR",
    "talimat": "INSTR", "kural": "INSTR", "directiv": "INSTR", "guideline": "INSTR", "инструкц": "INSTR",
    "vorherig": "PRIOR", "bisherig": "PRIOR", "précédent": "PRIOR", "precedent": "PRIOR", "antérieur": "PRIOR",
    "предыдущ": "PRIOR",
    "uneingeschränk": "UNRESTRICTED", "unrestrict": "UNRESTRICTED", "uncensor": "UNRESTRICTED",
    "unfilter": "UNRESTRICTED", "sınırsız": "UNRESTRICTED",
    "passw": "SECRET", "credential": "SECRET",
    "administr": "AUTHORITY", "authoriz": "AUTHORITY", "authoris": "AUTHORITY",
}  # fmt: skip
_STEM_LENGTHS = sorted({len(s) for s in _STEMS}, reverse=True)


def _build() -> tuple[dict[str, str], dict[str, str]]:
    words: dict[str, str] = {}
    for concept, text in _LEXICON.items():
        for word in text.split():
            words.setdefault(_folded(word), concept)
    return words, {_folded(stem): concept for stem, concept in _STEMS.items()}


_WORDS, _FOLDED_STEMS = _build()
_PAIR_WINDOW = 5  # a concept pair counts when the second follows the first within this many tokens
_CONCEPT_CACHE_MAX = 50_000
_concept_cache: dict[str, str] = {}


def concept_of(token: str) -> str:
    """The concept of a folded token, or "" when it has none."""
    found = _concept_cache.get(token)
    if found is None:
        found = _WORDS.get(token, "")
        if not found:
            for n in _STEM_LENGTHS:
                if len(token) >= n and (found := _FOLDED_STEMS.get(token[:n], "")):
                    break
        if len(_concept_cache) >= _CONCEPT_CACHE_MAX:
            _concept_cache.clear()
        _concept_cache[token] = found
    return found


def concept_features(tokens: list[str]) -> set[str]:
    """One feature "k:CONCEPT" per concept in the tokens, and "kk:A B" per ordered pair of concepts whose second follows
    the first within five tokens ("ignoriere alle vorherigen Anweisungen": IGNORE PRIOR, IGNORE INSTR, PRIOR INSTR)."""
    found = [(i, c) for i, c in enumerate(map(concept_of, tokens)) if c]
    feats = {"k:" + c for _i, c in found}
    for j, (i, a) in enumerate(found):
        for i2, b in found[j + 1 :]:
            if i2 - i > _PAIR_WINDOW:
                break
            feats.add(f"kk:{a} {b}")
    return feats
