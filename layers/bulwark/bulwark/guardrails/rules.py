"""The injection detector's weighted rule set, matched on every normalized view (normalization.views).

Rules are phrase patterns with bounded gaps (`(?:\\S+ ){0,4}`, disjoint classes), so the regex engine cannot
backtrack catastrophically; the unit tests and bench/validator_bench.py time a 50,000-character adversarial input.
A rule counts once, with its weight. Anchor words, stems and leads let most rules be skipped or tried at few places.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable

from bulwark.guardrails.normalization import _folded, views

_W = r"(?:\S+ ){0,%d}?"  # a bounded, lazily-matched gap of whole words
# The same, of words that do not end a clause with a comma or semicolon (a period may: parts of a message are joined
# with ".\n", and an attack split across two parts must still be read whole; see guardrails/apply.py).
_CLAUSE_W = r"(?:[^\s,;]+ ){0,%d}?"


def _gap(n: int) -> str:
    return _W % n


def _clause_gap(n: int) -> str:
    """Like _gap, but no word of the gap ends a clause with a comma or semicolon: disjoint classes too."""
    return _CLAUSE_W % n


_IGNORE_VERBS = (
    r"ignore|ignoring|disregard|disregarding|forget|forgetting|skip|bypass|override|overlook|neglect|abandon|"
    r"set aside|throw out|discard|dismiss|delete|erase|clear|reset|cancel|omit|stop following|do not follow|"
    r"don't follow|no longer follow"
)
_PRIOR = r"previous|prior|preceding|above|earlier|initial|original|old|existing|all|any|every|your|the|those|these|its|system|developer|safety|default"  # noqa: E501
_DIRECTIVES = (
    r"instructions?|prompts?|directives?|directions?|rules?|guidelines?|commands?|context|programming|constraints?|"
    r"restrictions?|guardrails?|polic(?:y|ies)|filters?|training|conditioning|messages?|orders?|settings|"
    r"limitations?|boundaries|safeguards?|principles|ethics|morals|protocols?|tasks?|requests?"
)


class _LazyPattern:
    """A rule's pattern, compiled at its first search. A rule is searched only where its anchor words occur, so most
    requests need few of the patterns; compiling all of them took 13 ms of every validator cold start."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled: re.Pattern[str] | None = None

    def compiled(self) -> re.Pattern[str]:
        compiled = self._compiled
        if compiled is None:  # two threads may both compile: harmless, the results are equal
            compiled = self._compiled = re.compile(self.pattern)
        return compiled

    def search(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        return self.compiled().search(text, pos, endpos)

    def matches_at(self, text: str, starts: Iterable[int]) -> bool:
        """Whether a match starts at one of `starts` (`match` at pos still sees the characters before pos)."""
        match = self.compiled().match
        return any(match(text, pos) is not None for pos in starts)


def _ml(*phrases: str) -> str:
    """An alternation of literal phrases, folded as the views are (Cyrillic and Greek look-alikes become Latin)."""
    return "|".join(re.escape(_folded(p)) for p in phrases)


# Written from each language's plain wording of the English rules (ignore / forget the previous instructions, no
# restrictions, system prompt, reveal, from now on you are), not from any evaluation set. Word order differs (Turkish,
# Japanese, Korean and Persian put the verb last), so object and verb are looked for within a short gap either way.
_ML_VERBS = _ml(
    "ignora",
    "ignori",
    "ignorar",
    "olvida",
    "olvídate de",
    "dimentica",
    "esqueça",
    "esquece",
    "negeer",
    "vergeet",
    "zignoruj",
    "zapomnij",
    "игнорируй",
    "проигнорируй",
    "забудь",
    "не обращай внимания на",
    "忽略",
    "无视",
    "忘记",
    "忘掉",
    "不要理会",
    "تجاهل",
    "انس",
    "ignorieren sie",
    "vergessen sie",
    "oublie",
    "oubliez",
    "ignorez",
)
_ML_OBJECTS = _ml(
    "instrucciones",
    "istruzioni",
    "instruções",
    "instrucoes",
    "instructies",
    "instrukcje",
    "polecenia",
    "regole",
    "reglas",
    "regras",
    "regels",
    "zasady",
    "consignes",
    "инструкции",
    "инструкций",
    "указания",
    "правила",
    "指令",
    "指示",
    "说明",
    "规则",
    "设定",
    "التعليمات",
    "الأوامر",
    "القواعد",
    "talimatları",
    "talimatlari",
    "kuralları",
    "yönergeleri",
    "anweisungen",
    "vorgaben",
    "前の指示",
    "以前の指示",
    "上記の指示",
    "이전 지시",
    "이전의 지시",
    "دستورات",
    "دستورالعمل",
    "قوانین",
)
_ML_LAST_VERBS = _ml(
    "unut",
    "yok say",
    "görmezden gel",
    "dikkate alma",
    "を無視",
    "を忘れ",
    "무시",
    "잊어",
    "نادیده بگیر",
    "فراموش کن",
)
_OVERRIDE_ML_PHRASES = _ml(
    "abweichend zu vorherigen", "abweichend von den vorherigen", "sind irrelevant", "sind ungültig",
    "önceki tüm talimat", "önceki talimat", "предыдущие инструкции", "以上の指示", "之前的指令", "之前的指示",
    "先前的指令", "上面的指令", "التعليمات السابقة", "دستورات قبلی",
)  # fmt: skip
_OVERRIDE_ML = (
    # The gap is up to 40 characters, not words: Chinese and Japanese have no spaces, and a lazy bounded gap of
    # characters stays linear (an optional space between repeated \S+ would let a long token split many ways).
    rf"(?:{_ML_VERBS}).{{0,40}}?(?:{_ML_OBJECTS})"  # verb first
    rf"|(?:{_ML_OBJECTS}).{{0,40}}?(?:{_ML_LAST_VERBS})"  # object first, verb last
    rf"|{_OVERRIDE_ML_PHRASES}"
)
_UNRESTRICTED_ML = _ml(
    "sin restricciones", "sin filtros", "sin censura", "senza restrizioni", "senza censura", "senza filtri",
    "sem restrições", "sem censura", "sem filtros", "sans restriction", "sans censure", "sans filtre",
    "ohne einschränkung", "ohne jede einschränkung", "ohne zensur", "ohne filter", "keine regeln",
    "keine einschränkungen",
    "kısıtlaması olmayan", "kısıtlama olmadan", "sansürsüz", "kuralsız", "без ограничений", "без цензуры",
    "без фильтров", "не ограничен", "不受任何限制", "没有任何限制", "没有限制", "无限制", "不受限制",
    "制限なし", "制限のない",
    "제한 없는", "제한이 없는", "제한 없이", "بدون قيود", "بلا قيود", "بدون محدودیت", "bez ograniczeń",
    "zonder beperkingen",
    "zonder censuur",
)  # fmt: skip
_SYSTEM_PROMPT_ML = _ml(
    "mensaje de sistema", "mensaje del sistema", "prompt del sistema", "instrucciones del sistema",
    "messaggio di sistema", "prompt di sistema", "istruzioni di sistema", "mensagem do sistema", "prompt do sistema",
    "instruções do sistema", "consignes système", "message système", "invite système", "instructions système",
    "systemnachricht", "systemanweisung", "sistem mesaj", "sistem talimat", "sistem istem", "системный промпт",
    "системное сообщение", "системные инструкции", "системную инструкцию", "系统提示", "系统消息", "系统指令",
    "システムプロンプト", "システムメッセージ", "시스템 프롬프트", "시스템 메시지", "موجه النظام", "رسالة النظام",
    "تعليمات النظام", "پیام سیستم", "دستورالعمل سیستم", "prompt systemowy", "systeemprompt", "systeembericht",
)  # fmt: skip
_REVEAL_ML = _ml(
    "revela", "muéstrame", "repite", "rivela", "mostrami", "ripeti", "revele", "mostre", "repita", "révèle", "affiche",
    "répète", "zeige mir", "gib mir", "wiederhole", "verrate", "göster", "tekrarla", "kelimesi kelimesine",
    "palabra por palabra", "parola per parola", "mot pour mot", "wort für wort", "покажи", "выведи", "повтори",
    "раскрой", "дословно", "显示", "输出", "重复", "告诉我", "逐字", "表示して", "出力して", "繰り返して",
    "보여줘", "출력해",
    "그대로", "اعرض", "اكتب", "كرر", "نشان بده", "بنویس", "تکرار کن", "pokaż", "toon",
)  # fmt: skip
_PERSONA_ML = _ml(
    "ab jetzt", "von nun an", "du bist jetzt", "a partir de ahora", "ahora eres", "actúa como", "d'ora in poi",
    "ora sei", "agisci come", "a partir de agora", "agora você é", "à partir de maintenant", "tu es maintenant",
    "bundan sonra", "sen artık", "rolünü oyna", "отныне", "с этого момента", "теперь ты", "ты теперь", "从现在开始",
    "从现在起", "你现在是", "扮演", "今後は", "これからは", "あなたは今", "지금부터", "너는 이제", "من الآن فصاعدا",
    "أنت الآن", "از این به بعد", "تو اکنون", "od teraz", "vanaf nu",
)  # fmt: skip


_NEVER_REFUSE_ML = _ml(
    "no te niegues", "nunca te niegues", "no rechaces", "non rifiutare", "mai rifiutare", "não recuse", "nunca recuse",
    "ne refuse pas", "ne refuse jamais", "verweigere nicht", "niemals verweigern", "lehne nicht ab", "reddetme",
    "reddedemezsin", "asla reddetme", "не отказывай", "никогда не отказывай", "不要拒绝", "不能拒绝", "拒否しないで",
    "断らないで", "거절하지 마", "لا ترفض", "رد نکن", "nie odmawiaj", "weiger niet",
)  # fmt: skip


_RULES: tuple[tuple[str, float, _LazyPattern], ...] = tuple(
    (name, weight, _LazyPattern(pattern))
    for name, weight, pattern in (
        # direct instruction override
        # The gaps stay inside one clause: "ignore my previous email, the correct order number" is no order.
        (
            "ignore_previous",
            1.0,
            rf"\b(?:{_IGNORE_VERBS})\b {_clause_gap(4)}(?:{_PRIOR})\b {_clause_gap(3)}(?:{_DIRECTIVES})\b",
        ),
        (
            "ignore_short",
            0.6,
            rf"\b(?:{_IGNORE_VERBS}) (?:everything|all|that|what) (?:above|before|i said|you were told)",
        ),
        (
            "new_instructions",
            0.6,
            r"\b(?:new|updated|real|actual|revised|important|urgent|additional|secret|hidden|"
            r"override|admin|system) (?:important )?(?:instructions?|directives?|orders|tasks?|rules)\b"
            r"(?: (?:are|is|follow|below))?[:!.]?",
        ),
        (
            "instead_do",
            0.4,
            r"\binstead(?:,)? (?:you (?:should|must|will|need to)|(?:please )?(?:say|print|output|respond|"
            r"reply|write|tell))\b",
        ),
        ("forgot_to_tell", 0.6, r"\b(?:i|we) (?:made a mistake|forgot to (?:ask|tell|mention|say))\b"),
        (
            "from_now_on",
            0.35,
            r"\b(?:from now on|from this (?:moment|point)(?: on(?:wards?)?)?|for the rest of this "
            r"conversation|henceforth)\b",
        ),
        (
            "ignore_multilingual",
            1.0,
            r"\b(?:ignorier\w*|vergiss\w*|vergessen sie|missachte\w*) (?:\S+ ){0,4}?(?:anweisung"
            r"\w*|befehle|regeln|instruktionen|vorgaben|aufgaben|alles (?:davor|vorher|bisherige))"
            r"|\b(?:ignora\w*|olvida\w*|olvide|descarta\w*|desconsidere|esque[cç]a) (?:\S+ ){0,4}?"
            r"(?:instrucciones|reglas|indicaciones|instru[cç](?:õ|o)es|regras|istruzioni|regole)"
            r"|\b(?:ignorez|oublie\w*|ignore) (?:\S+ ){0,4}?(?:consignes|instructions pr[ée]c[ée]dentes"
            r"|r[èe]gles|tout ce qui pr[ée]c[èe]de)",
        ),
        (
            "forget_everything",
            0.8,
            r"\b(?:forget|ignore|disregard|erase) (?:about )?(?:everything|all(?: of)? that|all)"
            r" (?:you(?:'ve| have)? (?:learned|been told|know|were told)|before|above|previously|"
            r"i (?:said|told you)|so far)",
        ),
        (
            "if_asked_to",
            0.7,
            r"\bif (?:you are|you're|you get) (?:told|asked|instructed) to (?:summari[sz]e|translate|"
            r"answer|analy[sz]e|review|respond)\b",
        ),
        (
            "prefix_injection",
            0.6,
            r"\b(?:start|begin)(?:s|ning)? (?:\S+ ){0,3}?with [\"'](?:sure|absolutely|certainly|"
            r"of course|yessir|here is|here's|my instructions|you are)",
        ),
        (
            "rules_dont_apply",
            0.7,
            r"\b(?:rules|polic(?:y|ies)|guidelines|restrictions|laws|ethics|filters) (?:\S+ ){0,2}?"
            r"(?:don't|do not|no longer|doesn't|does not|won't|will not|never) apply\b"
            r"|\b(?:doesn'?t|does not|don'?t|do not|never|won't) care (?:about )?(?:any )?(?:\S+ )?"
            r"(?:laws|rules|ethics|morals|morality|legality|guidelines|consequences)\b",
        ),
        (
            "restrictions_off",
            0.8,
            r"\b(?:safety|content|ethical|moral) (?:restrictions|filters?|guidelines|guardrails|"
            r"settings)\W{0,3}(?:none|disabled|off|removed|deactivated)\b",
        ),
        (
            "policy_puppetry",
            0.8,
            r"\b(?:allowed|blocked) (?:modes|responses|strings)\b|\binteraction-config\b"
            r"|\buserquery\b|\bresponseformat\b|\binsert divider\b|\bgodmode\b|\brebel answer\b",
        ),
        (
            "config_leak",
            0.6,
            r"\b(?:display|share|show|reveal|print|dump|output|list) (?:me )?(?:your |the |all )?"
            r"(?:system |internal |hidden |full )?(?:configuration|config|settings|initialization)\b"
            r"|\bmy (?:instructions|system prompt|rules|initial prompt) (?:are|is|were)\b|\bsystemprompt\b"
            r"|\b(?:word for word|verbatim)\b",
        ),
        ("role_tag", 0.5, r"\[(?:system|admin|developer|sys)\]|\b(?:you are now|now you are)\b"),
        ("leetspeak_request", 0.3, r"\b(?:l33t ?speak|leet ?speak|1337)\b"),
        (
            "praise_pivot",
            0.3,
            r"\b(?:well done|very good|great job|good job|excellent|that's enough|that is enough|stop)"
            r"[.!,]* (?:now|next|but now)\b",
        ),
        # persona / jailbreak vocabulary
        (
            "dan",
            1.0,
            r"\bdo anything now\b|\bdan mode\b|\bdan,? (?:which|who) stands\b|\bact as (?:a |an )?dan\b"
            r"|\b(?:you are|you're|as) (?:a |an )?(?:dan|stan|dude|aim|anti-dan|betterdan|devmode|evilbot)\b",
        ),
        ("jailbreak_word", 0.6, r"\bjail ?br(?:eak|oken|eaking)\b"),
        ("developer_mode", 0.5, r"\b(?:developer|dev|debug|god|admin|sudo|unrestricted|opposite|evil|chaos) mode\b"),
        (
            "mode_enabled",
            0.3,
            r"\bmode (?:enabled|activated|on)\b|\b(?:enable|activate|enter)(?:d)? (?:\S+ ){0,2}mode\b",
        ),
        ("unfiltered", 0.45, r"\b(?:unfiltered|uncensored|unrestricted|unbound|unchained|unleashed)\w*"),
        ("amoral", 0.35, r"\b(?:amoral|immoral|unethical|no morals?|no ethics)\b"),
        (
            "no_restrictions",
            0.7,
            r"\b(?:no|without|free (?:of|from)|zero|none of the|not have any|doesn't have any|does not "
            r"have any|don't have any|devoid of) (?:\S+ ){0,3}?(?:restrictions?|limitations?|"
            r"filters?|filtering|censorship|guidelines|boundaries|constraints|limits|rules|"
            r"ethical (?:or|and|\S+) moral|moral (?:or|and) ethical|ethics|morals|safeguards)\b",
        ),
        (
            "not_bound",
            0.7,
            r"\b(?:not|never|no longer) (?:be )?(?:bound|restricted|limited|constrained|confined) (?:by|to)\b"
            r"|\b(?:broken|break|breaking|freed|free|escaped?|liberated?) (?:\S+ ){0,2}?(?:free )?"
            r"(?:of|from) (?:\S+ ){0,3}?(?:confines|restrictions|rules|shackles|limitations|chains|"
            r"constraints|guidelines|policies)\b",
        ),
        (
            "policy_defiance",
            0.7,
            r"\b(?:ignore|bypass|break|breaks|violate|violates|disregard|circumvent|evade|against|"
            r"doesn't (?:follow|care about|abide by)|does not (?:follow|care about|abide by)|"
            r"not (?:follow|abide by|adhere to|comply with)) (?:\S+ ){0,3}?(?:openai|anthropic|"
            r"content|safety|usage|ethical|moral|legal) (?:\S+ ){0,1}?(?:polic(?:y|ies)|guidelines|"
            r"rules|filters|standards|principles|restrictions|concerns|considerations)\b",
        ),
        (
            "openai_policy",
            0.3,
            r"\b(?:openai|anthropic)(?:'s)? (?:content |usage )?(?:polic(?:y|ies)|guidelines|rules)\b",
        ),
        (
            "never_refuse",
            0.6,
            r"\b(?:never|not|won't|will not|cannot|can't|can not|must not|mustn't|don't|do not|unable "
            r"to) (?:\S+ ){0,2}?(?:refuse|decline|deny|reject|say no|warn|apologi[sz]e|censor)\b",
        ),
        (
            "no_matter",
            0.6,
            r"\bno matter how (?:\S+ ){0,2}?(?:immoral|unethical|illegal|dangerous|offensive|harmful|"
            r"inappropriate|explicit|wrong|evil|controversial|disgusting)\b",
        ),
        (
            "refusal_suppression",
            0.7,
            r"\b(?:never|don't|do not|won't|will not|must not|cannot|not|avoid|without) (?:\S+ ){0,3}?"
            r"(?:say|saying|mention|include|including|use|using|respond with|add|adding|"
            r"write|writing|contain|containing|output|print|use the words?|"
            r"apologi[sz]e|apologizing) (?:\S+ ){0,3}?(?:\"|')?(?:i'?m sorry|i am sorry|"
            r"as an ai|i apologi[sz]e|i cannot|i can't|disclaimers?|warnings?|apologies)",
        ),
        (
            "stay_in_character",
            0.6,
            r"\b(?:stay|staying|remain|keep|break|breaking|broke) (?:in |out of |of )?"
            r"(?:character|persona|role)\b|\bcharacter (?:break|reminder)\b",
        ),
        (
            "dual_response",
            0.5,
            r"\b(?:two|2|both|dual) (?:different |separate |distinct )?(?:responses|answers|"
            r"paragraphs|outputs|ways)\b|\[(?:🔓|🔒|jailbreak|classic|normal|gpt|chatgpt)[^\]\n]{0,30}\]",
        ),
        (
            "persona_switch",
            0.45,
            r"\b(?:you are|you're|you will be|you are going to|you'll) (?:now |no longer |going to "
            r"|not )?(?:act|acting|pretend|pretending|play|playing|roleplay|simulate|simulating|"
            r"become|be|behave)\b(?: (?:as|like|the role of))?",
        ),
        (
            "not_an_ai",
            0.7,
            r"\b(?:you are|you're|you will be) (?:no longer|not) (?:an? |the )?(?:ai|assistant|chatgpt|"
            r"language model|llm|chatbot|claude|gpt)\b|\b(?:forget|forgot) (?:that )?you are an? (?:ai|"
            r"assistant|language model)\b",
        ),
        ("ai_target", 0.25, r"\b(?:chatgpt|gpt-?[34]|gpt|openai|llm|language model|ai model|chatbot|ai assistant)\b"),
        (
            "roleplay",
            0.2,
            r"\b(?:role ?play|pretend|hypothetical(?:ly)?|fictional|imagine|simulate|simulation|"
            r"character|persona|act as)\b",
        ),
        (
            "obey",
            0.45,
            r"\b(?:must|will|shall|always) (?:\S+ ){0,2}?(?:obey|comply|answer|respond|fulfil|fulfill) (?:\S+ ){0,3}?"
            r"(?:any|all|every|whatever|no matter)\b|\b(?:obey|comply with) (?:me|my|every|all)\b",
        ),
        (
            "harm_vocab",
            0.15,
            r"\b(?:illegal|harmful|dangerous|offensive|explicit|nsfw|malicious|unsafe|swear|profanity)\b",
        ),
        # system prompt extraction
        (
            "prompt_leak",
            1.0,
            r"\b(?:reveal|print|show|display|output|repeat|tell|give|share|leak|disclose|write|paste|"
            r"dump|spell|recite|list|provide|return|expose|echo|copy|what (?:are|is|were|was)) (?:me )?"
            r"(?:\S+ ){0,5}?(?:your|the|my|all|initial|original|hidden|secret|first|above|full|entire|"
            r"exact|complete)\b (?:\S+ ){0,3}?(?:system (?:prompt|message|instructions?)|"
            r"(?:initial|original|hidden|secret|first|starting|pre-?|internal|core|developer|"
            r"underlying|given|exact) (?:system )?(?:prompt|instructions?|directives?|message|"
            r"configuration|rules|guidelines)|(?:instructions?|prompt|text|words|messages?|content) "
            r"(?:above|before this|you were given|that you were given|at the (?:beginning|start|top)|"
            r"(?:given|provided) to you))",
        ),
        (
            "system_prompt",
            0.45,
            r"\bsystem (?:prompt|message|instructions?)\b|\bpre-?prompt\b|\binitial (?:prompt|"
            r"instructions?)\b|\bprompt (?:above|injection)\b",
        ),
        (
            "everything_above",
            0.5,
            r"\b(?:everything|all|words|text|lines|content) (?:\S+ ){0,2}?(?:above|before this "
            r"(?:line|message|point)|prior to this)\b|\boutput initialization\b",
        ),
        # fake conversation structure
        (
            "chat_delimiter",
            0.8,
            r"<\|?(?:im_start|im_end|endoftext|system|eot_id|start_header_id|end_header_id)\|?>|\[/?"
            r"inst\]|<</?sys>>|</?(?:system|instructions?|admin|sys)>|\b(?:end|begin) (?:of )?"
            r"(?:system )?(?:prompt|instructions|context|input)\b",
        ),
        ("role_prefix", 0.5, r"(?:^|\n|\. )(?:system|assistant|admin|developer)(?: message)? ?: "),
        (
            "authority",
            0.6,
            r"\b(?:this is|i am|i'm) (?:your|the|an?) (?:developer|creator|admin|administrator|owner|"
            r"system administrator|openai|anthropic|maintainer|operator)\b|\b(?:admin|administrator|"
            r"administrative|elevated|developer|maintenance|debug|sudo|root|god) "
            r"(?:access|override|privileges?|command|"
            r"authori[sz]ation)\b",
        ),
        # exfiltration and canary payloads
        ("md_exfil", 0.7, r"!\[[^\]\n]{0,200}\]\(https?://[^)\s]{1,300}[?&][^)\s=]{1,50}="),
        (
            "include_in_response",
            0.5,
            r"\b(?:include|insert|append|add|embed|render)(?: in| to| at the end of)? your "
            r"(?:response|answer|reply|output)\b",
        ),
        (
            "exfil_send",
            0.5,
            r"\b(?:send|post|forward|email|transmit|exfiltrate|upload|leak) (?:\S+ ){0,5}?(?:to|at) "
            r"(?:https?://|\S+@\S+\.\S+)",
        ),
        ("script_tag", 0.5, r"<script\b|javascript:|onerror ?="),
        (
            "pwned",
            0.8,
            r"\b(?:i have been|i've been|you have been|you've been) (?:pwned|hacked|jailbroken)\b|\bhaha pwned\b",
        ),
        (
            "say_exactly",
            0.3,
            r"\b(?:say|print|output|respond with|reply with|write|repeat) (?:only |exactly |just )?"
            r"(?:the (?:word|phrase|text|string) )?\"[^\"\n]{1,80}\"(?: and nothing else)?",
        ),
        (
            "decode_and_follow",
            0.5,
            r"\b(?:decode|decipher|translate) (?:\S+ ){0,4}?(?:and|then) (?:\S+ ){0,2}?"
            r"(?:follow|execute|do|perform|obey|run|answer)\b|\bbase64\b|\brot-?13\b",
        ),
        # issue 17: authority claims, completion extraction, instructions to agents reading a document
        (
            "claimed_authority",
            0.6,
            r"\b(?:authori[sz]ed|approved|official|mandatory|required) (?:\S+ ){0,2}?(?:diagnostic|security "
            r"(?:test|audit|review|check)|override|maintenance|compliance (?:check|test)|red team)\b"
            r"|\b(?:the user|the admin|the administrator|your operator|the owner) (?:has )?(?:already )?"
            r"(?:approved|authori[sz]ed|consented|confirmed)\b|\b(?:message|note|notice|instructions?) from (?:the )?"
            r"(?:system|administrator|admin|developers?|security team|it department|operator)\b",
        ),
        (
            "confirm_by",
            0.5,
            r"\bconfirm (?:\S+ ){0,2}?by (?:calling|sending|replying|posting|running|outputting|printing|saying|"
            r"writing)\b",
        ),
        (
            "completion_extraction",
            0.8,
            r"\b(?:complete|continue|finish) (?:\S+ ){0,3}?(?:the (?:system prompt|instructions|initial prompt)|"
            r"[\"'](?:the |my |your )?(?:system prompt|instructions|initial prompt|hidden prompt))"
            r"|\b(?:system prompt|initial instructions|hidden instructions) (?:says|reads|begins|starts) ?[:\"']",
        ),
        (
            "agent_addressed",
            0.6,
            r"\b(?:ai|llm|gpt|assistant|agent|model|chatbot|bot)s? (?:\S+ ){0,2}?(?:reading|processing|summari[sz]ing|"
            r"parsing|analy[sz]ing|viewing) this\b|\bnote to (?:the )?(?:ai|assistant|agent|llm|model)\b"
            r"|\b(?:if|when) you are an? (?:ai|llm|language model|assistant|agent)\b",
        ),
        (
            "ignore_the_above",
            0.8,
            # Followed by "and", "then" or the sentence's end: "ignore the above and output X", not "ignore the
            # previous email".
            r"\b(?:ignore|disregard|forget) (?:all )?(?:of )?(?:the |everything )?(?:above|previous|preceding|prior)"
            r"(?: and\b| then\b|[.,:;!]|$)",
        ),
        (
            "task_cancelled",
            0.6,
            r"\b(?:the )?(?:prior|previous|original|current|earlier) (?:task|request|instructions?|assignment) "
            r"(?:is|are|has been|have been|was|were) (?:cancelled|canceled|void|revoked|superseded|obsolete|over)\b",
        ),
        # issue 17: the same attacks in other languages (each phrase folded as the views are; see _ml)
        ("override_ml", 1.0, _OVERRIDE_ML),
        ("unrestricted_ml", 0.6, _UNRESTRICTED_ML),
        ("system_prompt_ml", 0.6, _SYSTEM_PROMPT_ML),
        ("reveal_ml", 0.45, _REVEAL_ML),
        ("persona_ml", 0.45, _PERSONA_ML),
        ("never_refuse_ml", 0.6, _NEVER_REFUSE_ML),
    )
)


# Words one of which every match of a rule must contain. A rule whose anchors are all absent from a view is skipped
# without running its regex: on long benign prose this skips most rules (each full scan costs ~30 ns a character).
# Rules missing here always run. bench/guardrail_eval.py shows the same verdicts with and without this filter.
_ANCHORS: dict[str, frozenset[str]] = {
    name: frozenset(words.split())
    for name, words in {
        "ignore_previous": "instruction instructions prompt prompts directive directives direction directions "
        "rule rules "
        "guideline guidelines command commands context programming constraint constraints restriction restrictions "
        "guardrail guardrails policy policies filter filters training conditioning message messages order orders "
        "settings limitation limitations boundaries safeguard safeguards principles ethics morals protocol protocols "
        "task tasks request requests",
        "ignore_short": "above before said told",
        "forget_everything": "forget ignore disregard erase",
        "if_asked_to": "if",
        "prefix_injection": "start begin starts begins starting beginning",
        "rules_dont_apply": "apply care",
        "restrictions_off": "none disabled off removed deactivated",
        "policy_puppetry": "allowed blocked interaction userquery responseformat insert godmode rebel",
        "new_instructions": "instruction instructions directive directives orders task tasks rules",
        "instead_do": "instead",
        "forgot_to_tell": "mistake forgot",
        "from_now_on": "now moment point rest henceforth",
        "dan": "dan stan dude aim anti betterdan devmode evilbot anything",
        "jailbreak_word": "jailbreak jailbroken jailbreaking jail",
        "developer_mode": "mode",
        "mode_enabled": "mode",
        "not_bound": "bound restricted limited constrained confined confines restrictions rules shackles limitations "
        "chains constraints guidelines policies",
        "policy_defiance": "policy policies guidelines rules filters standards principles restrictions concerns "
        "considerations",
        "openai_policy": "openai anthropic",
        "never_refuse": "refuse decline deny reject say warn apologise apologize censor",
        "no_matter": "matter",
        "refusal_suppression": "sorry i ai apologise apologize cannot can disclaimer disclaimers warning warnings "
        "apologies",
        "stay_in_character": "character persona role",
        "persona_switch": "you",
        "not_an_ai": "ai assistant chatgpt language llm chatbot claude gpt",
        "obey": "obey comply answer respond fulfil fulfill",
        "prompt_leak": "system initial original hidden secret first starting pre prompt preprompt internal core "
        "developer "
        "underlying given exact above before beginning start top provided",
        "system_prompt": "system preprompt pre initial prompt",
        "config_leak": "configuration config settings initialization my systemprompt word verbatim",
        "role_tag": "system admin developer sys now",
        "md_exfil": "http https",
        "include_in_response": "response answer reply output",
        "exfil_send": "http https",
        "script_tag": "script javascript onerror",
        "pwned": "pwned hacked jailbroken",
        "leetspeak_request": "l33t leet l33tspeak leetspeak 1337",
        "decode_and_follow": "decode decipher translate base64 rot13 rot",
        "praise_pivot": "now next",
    }.items()
}
_WORDS = re.compile(r"[a-z0-9]+")


# Substrings one of which every match must contain, for rules whose vocabulary is stems rather than whole words.
def _alternatives(pattern: str) -> tuple[str, ...]:
    """The literal phrases of an _ml alternation, unescaped (each one a stem: a match contains one of them)."""
    return tuple(re.sub(r"\\(.)", r"\1", p) for p in pattern.split("|"))


_STEMS: dict[str, tuple[str, ...]] = {
    "override_ml": _alternatives(_ML_VERBS) + _alternatives(_ML_OBJECTS) + _alternatives(_OVERRIDE_ML_PHRASES),
    "unrestricted_ml": _alternatives(_UNRESTRICTED_ML),
    "system_prompt_ml": _alternatives(_SYSTEM_PROMPT_ML),
    "reveal_ml": _alternatives(_REVEAL_ML),
    "persona_ml": _alternatives(_PERSONA_ML),
    "never_refuse_ml": _alternatives(_NEVER_REFUSE_ML),
    "confirm_by": ("confirm",),
    "ignore_the_above": ("ignore", "disregard", "forget"),
    "task_cancelled": ("cancel", "void", "revoked", "supersed", "obsolete", "over"),
    "claimed_authority": ("authori", "approved", "official", "mandatory", "required", "confirm", "message from",
                          "the user", "the admin", "your operator", "the owner"),
    "completion_extraction": ("complete", "continue", "finish", "says", "reads", "begins", "starts"),
    "agent_addressed": (" this", "note to", "you are a"),
    "ignore_multilingual": ("ignor", "vergiss", "vergessen", "missacht", "olvid", "descart", "desconsider", "esque",
                            "oubli"),
    "unfiltered": ("unfilter", "uncensor", "unrestrict", "unbound", "unchain", "unleash"),
    "amoral": ("moral", "ethic"),
    "no_restrictions": ("restrict", "limit", "filter", "censor", "guideline", "boundar", "constraint", "rule", "ethic",
                        "moral", "safeguard"),
    "ai_target": ("gpt", "openai", "llm", "language model", "ai model", "chatbot", "ai assistant"),
    "roleplay": ("role", "pretend", "hypothetic", "fiction", "imagin", "simulat", "character", "persona", "act as"),
    "harm_vocab": ("illegal", "harm", "danger", "offensive", "explicit", "nsfw", "malicious", "unsafe", "swear",
                   "profan"),
    "everything_above": ("above", "before this", "prior to this", "initialization"),
    "chat_delimiter": ("<", "[", "end", "begin"),
    "role_prefix": (":",),
    "authority": ("this is", "i am", "i'm", "access", "override", "privilege", "command", "authori"),
    "say_exactly": ('"',),
    "dual_response": ("response", "answer", "paragraph", "output", "ways", "["),
}  # fmt: skip


# Literal prefixes one of which every match of a rule starts with (tests/unit/test_injection_leads.py derives them from
# the patterns' parse trees and checks this table). In every rule, a prefix that starts with a letter or digit follows a
# \b, so it can start a match only where no [a-z0-9] precedes it. Such a rule is tried with `match` at those places
# instead of being searched for: a search runs the pattern at every character (~35 ns each), and log lines or tables
# hold enough anchor words (orders, warn, [, ") to make most rules search whole views.
_LEADS: dict[str, str] = {  # "|"-separated
    "ignore_previous": "abandon|bypass|cancel|clear|delete|discard|dismiss|disregard|do not follow|"
    "don't follow|erase|forget|ignore|ignoring|neglect|no longer follow|omit|overlook|"
    "override|reset|set aside|skip|stop following|throw out",
    "ignore_short": "abandon|bypass|cancel|clear|delete|discard|dismiss|disregard|do not follow|"
    "don't follow|erase|forget|ignore|ignoring|neglect|no longer follow|omit|overlook|"
    "override|reset|set aside|skip|stop following|throw out",
    "new_instructions": "actual|additional|admin|hidden|important|new|override|real|revised|secret|system|"
    "updated|urgent",
    "instead_do": "instead",
    "forgot_to_tell": "i|we",
    "from_now_on": "for the rest of |from now on|from this moment|from this point|henceforth",
    "ignore_multilingual": "descarta|desconsidere|esque|ignora|ignore|ignorier|missachte|olvida|olvide|oublie|"
    "vergessen sie|vergiss",
    "forget_everything": "disregard|erase|forget|ignore",
    "if_asked_to": "if you are|if you get|if you're",
    "prefix_injection": "begin|start",
    "rules_dont_apply": "do not|does not|doesn|don|ethics|filters|guidelines|laws|never|policies|policy|"
    "restrictions|rules|won't",
    "restrictions_off": "content|ethical|moral|safety",
    "policy_puppetry": "allowed|blocked|godmode|insert divider|interaction-conf|rebel answer|responseformat|userquery",
    "config_leak": "display|dump|list|my initial prompt|my instructions|my rules|my system prompt|"
    "output|print|reveal|share|show|systemprompt|verbatim|word for word",
    "role_tag": "[admin|[developer|[sys|now you are|you are now",
    "leetspeak_request": "1337|l33t|leet",
    "praise_pivot": "excellent|good job|great job|stop|that is enough|that's enough|very good|well done",
    "dan": "act as |as|dan|do anything now|you are|you're",
    "jailbreak_word": "jail",
    "developer_mode": "admin|chaos|debug|dev|evil|god|opposite|sudo|unrestricted",
    "mode_enabled": "activate|enable|enter|mode activated|mode enabled|mode on",
    "unfiltered": "unbound|uncensored|unchained|unfiltered|unleashed|unrestricted",
    "amoral": "amoral|immoral|no ethics|no moral|unethical",
    "no_restrictions": "devoid of|does not have an|doesn't have any|don't have any|free from|free of|no|without|zero",
    "not_bound": "break|broken|escape|free|liberate|never|no longer|not",
    "policy_defiance": "against|break|bypass|circumvent|disregard|does not abide by|does not care about|"
    "does not follow|doesn't abide by|doesn't care about|doesn't follow|evade|ignore|"
    "not abide by|not adhere to|not comply with|not follow|violate",
    "openai_policy": "anthropic|openai",
    "never_refuse": "can not|can't|cannot|do not|don't|must not|mustn't|never|not|unable to|will not|won't",
    "no_matter": "no matter how ",
    "refusal_suppression": "avoid|cannot|do not|don't|must not|never|not|will not|without|won't",
    "stay_in_character": "break|broke|character break|character reminder|keep|remain|stay",
    "dual_response": "2|[chatgpt|[classic|[gpt|[jailbreak|[normal|[🔒|[🔓|both|dual|two",
    "persona_switch": "you are|you will be|you'll|you're",
    "not_an_ai": "forget|forgot|you are|you will be|you're",
    "ai_target": "ai assistant|ai model|chatbot|chatgpt|gpt|language model|llm|openai",
    "roleplay": "act as|character|fictional|hypothetical|imagine|persona|pretend|role|simulate|simulation",
    "obey": "always|comply with|must|obey|shall|will",
    "harm_vocab": "dangerous|explicit|harmful|illegal|malicious|nsfw|offensive|profanity|swear|unsafe",
    "prompt_leak": "copy|disclose|display|dump|echo|expose|give|leak|list|output|paste|print|provide|"
    "recite|repeat|return|reveal|share|show|spell|tell|what are|what is|what was|"
    "what were|write",
    "system_prompt": "initial instruction|initial prompt|pre|prompt above|prompt injection|"
    "system instruction|system message|system prompt",
    "everything_above": "all|content|everything|lines|output initializ|text|words",
    "chat_delimiter": "<|[|begin|end",
    "authority": "admin|debug|developer|elevated|god|i am|i'm|maintenance|root|sudo|this is",
    "md_exfil": "![",
    "include_in_response": "add|append|embed|include|insert|render",
    "exfil_send": "email|exfiltrate|forward|leak|post|send|transmit|upload",
    "pwned": "haha pwned|i have been|i've been|you have been|you've been",
    "say_exactly": "output|print|repeat|reply with|respond with|say|write",
    "decode_and_follow": "base64|decipher|decode|rot|translate",
    "claimed_authority": "approved|authori|instruction|mandatory|message|note|notice|official|required|the admin|"
    "the owner|the user|your operator",
    "confirm_by": "confirm ",
    "ignore_the_above": "disregard|forget|ignore",
    "completion_extraction": "complete|continue|finish|hidden instructi|initial instruct|system prompt",
    "agent_addressed": "agent|ai|assistant|bot|chatbot|gpt|if|llm|model|note to |when",
}

_MAX_LEAD_STARTS = 128  # more starts than this: search (each `match` costs about what 30 characters of search do)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"  # what _WORDS takes into a token


# A lead as (text, token, letter-led), for telling cheaply that a view cannot hold it: a letter-led lead starts a token
# (as _WORDS splits the view), which is `token` exactly when the lead goes on past its first run of [a-z0-9] and starts
# with the lead otherwise; any other lead is looked for in the view itself.
_Lead = tuple[str, str | None, bool]


def _lead(text: str) -> _Lead:
    head = text[: len(text) - len(text.lstrip(_ALNUM))]
    return text, head if head and len(head) < len(text) else None, bool(head)


@functools.lru_cache(maxsize=512)  # the lead vocabulary is fixed; compiled at first use, not at import
def _lead_finder(text: str) -> re.Pattern[str]:
    # Where `text` occurs with no [a-z0-9] before it (when letter-led): literal-led, so `re` finds it in C.
    bound = "(?<![a-z0-9]" + re.escape(text) + ")" if text[0] in _ALNUM else ""
    return re.compile(re.escape(text) + bound)


def _lead_starts(view: str, words: set[str], vocab: str, leads: tuple[_Lead, ...]) -> list[int] | None:
    """Every place where a match with one of `leads` can start; None when there are more than _MAX_LEAD_STARTS.
    `words` is the view's set of tokens and `vocab` those tokens, each after a space."""
    starts: list[int] = []
    for text, token, letter_led in leads:
        if token is not None:
            if token not in words:
                continue
        elif letter_led:
            if " " + text not in vocab:
                continue
        elif text not in view:
            continue
        starts += (m.start() for m in _lead_finder(text).finditer(view))
        if len(starts) > _MAX_LEAD_STARTS:
            return None
    return starts


_NEAR = 400  # a rule match lies within this many characters of one of its anchor words (gaps are a few words)
_FULL_SCAN_CHARS = 4096  # views up to this long are searched whole; longer ones only around anchor occurrences
_MAX_SPOTS = 256


def _stem_spots(view: str, stems: tuple[str, ...]) -> list[int] | None:
    spots: list[int] = []
    for stem in stems:
        i = view.find(stem)
        while i >= 0:
            spots.append(i)
            if len(spots) > _MAX_SPOTS:
                return None  # too many: search the whole view
            i = view.find(stem, i + 1)
    return spots


def _search_near(pattern: _LazyPattern, view: str, spots: list[int] | None) -> bool:
    """pattern.search on the parts of `view` within _NEAR characters of `spots` (None: the whole view).

    search(view, pos, endpos) keeps the characters before pos visible to \\b, so a window edge creates no false word
    boundary at its start; the end is moved to the next space so no word is cut there either.
    """
    if spots is None or len(view) <= _FULL_SCAN_CHARS or len(spots) * 2 * _NEAR >= len(view):
        return pattern.search(view) is not None
    start = end = -1
    for p in sorted(spots):
        lo, hi = max(0, p - _NEAR), p + _NEAR
        if lo <= end:
            end = hi
            continue
        if end >= 0 and pattern.search(view, start, _word_end(view, end)):
            return True
        start, end = lo, hi
    return end >= 0 and pattern.search(view, start, _word_end(view, end)) is not None


def _word_end(view: str, i: int) -> int:
    j = view.find(" ", i)
    return len(view) if j < 0 else j


def rule_hits(text: str, stop_at: float | None = None) -> dict[str, float]:
    """The rules that match any normalized view of `text`, with their weights (no length cap: see detect_injection).

    With `stop_at`, returns as soon as the weights found reach it (the verdict is then settled; the rule list is a
    deterministic prefix of the full one): attack texts match many rules, and this halves their cost.

    A rule whose anchor words (or stems) are absent from a view is skipped. A rule with leads is tried only where
    one of them occurs (up to 128 places); otherwise, on views longer than 4 KiB, it is searched only within 400
    characters of its anchors' occurrences, so long prose costs little more than its length.
    """
    return rule_hits_of_views(views(text), stop_at)


# (name, weight, pattern, anchor words or None, stems or None, leads or None), in rule order.
@functools.cache  # built at the first detection, not at import (cold start)
def _rule_table() -> tuple[
    tuple[str, float, _LazyPattern, frozenset[str] | None, tuple[str, ...] | None, tuple[_Lead, ...] | None], ...
]:
    return tuple(
        (
            name,
            weight,
            pattern,
            _ANCHORS.get(name),
            _STEMS.get(name),
            tuple(_lead(text) for text in _LEADS[name].split("|")) if name in _LEADS else None,
        )
        for name, weight, pattern in _RULES
    )


@functools.lru_cache(maxsize=1024)  # the anchor vocabulary is fixed (a few hundred words)
def _word_at(word: str) -> re.Pattern[str]:
    # Where `word` is a whole token of _WORDS: not inside a longer run of [a-z0-9]. A literal-led search, in C.
    return re.compile(re.escape(word) + r"(?![a-z0-9])(?<![a-z0-9]" + re.escape(word) + ")")


def _word_positions(view: str, words: Iterable[str]) -> list[int] | None:
    """Start of every token of `view` (as _WORDS splits it) equal to one of `words`; None when over _MAX_SPOTS."""
    spots: list[int] = []
    for word in words:
        for m in _word_at(word).finditer(view):
            spots.append(m.start())
            if len(spots) > _MAX_SPOTS:
                return None  # too many: the view is searched whole
    return spots


def rule_hits_of_views(all_views: list[str], stop_at: float | None = None) -> dict[str, float]:
    hit: dict[str, float] = {}
    for view in all_views:
        words = set(_WORDS.findall(view))
        vocab = " " + " ".join(words)
        # Where anchors occur matters only on a long view (a short one is searched whole).
        long_view = len(view) > _FULL_SCAN_CHARS
        for name, weight, pattern, anchors, stems, leads in _rule_table():
            if name in hit:
                continue
            present = words & anchors if anchors is not None else None
            if present is not None and not present:
                continue
            starts = _lead_starts(view, words, vocab, leads) if leads is not None else None
            if starts is not None:
                found = pattern.matches_at(view, starts)  # no start, no match: the stems need no check
            else:
                spots: list[int] | None = None
                if present is not None and long_view:
                    spots = _word_positions(view, present)
                if stems is not None:
                    if not any(stem in view for stem in stems):
                        continue
                    if anchors is None and long_view:
                        spots = _stem_spots(view, stems)
                found = _search_near(pattern, view, spots)
            if found:
                hit[name] = weight
                if stop_at is not None and sum(hit.values()) >= stop_at:
                    return hit
    return hit
