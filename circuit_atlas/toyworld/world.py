"""The toy world's facts, as plain Python data.

Regions are real US states, Canadian provinces and countries, each with a one-word capital (so
that, with the toy world's tokenizer, every capital is a single token) and six other cities. City
names are unique across the world and never equal a capital or a region name. A region's *kind*
decides the word used in two-hop sentences ("the state containing Dallas", "the country containing
Shanghai", "the territory containing Vancouver"). Each region also has a short code (postal code for
states and provinces, ISO-3 code for countries), a second region attribute used by the corpus.

The word lists for the multilingual part are aligned across English, French and Chinese: entry i of
OPPOSITES is one concept pair in the three languages.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass, replace

KIND_WORDS: dict[str, tuple[str, ...]] = {
    # first entry: the word used in evaluation prompts; the others are paraphrases in training text
    "state": ("state",),
    "country": ("country",),
    "province": ("territory", "province"),
}


@dataclass(frozen=True)
class Region:
    name: str
    kind: str  # "state" | "country" | "province"
    capital: str
    code: str
    cities: tuple[str, ...]

    @property
    def kind_word(self) -> str:
        return KIND_WORDS[self.kind][0]


def _r(name: str, kind: str, capital: str, code: str, cities: str) -> Region:
    return Region(name, kind, capital, code, tuple(c.strip() for c in cities.split(",")))


REAL_REGIONS: tuple[Region, ...] = (
    # --- US states -------------------------------------------------------------------------
    _r("Texas", "state", "Austin", "TX", "Dallas, Houston, San Antonio, El Paso, Fort Worth, Lubbock"),
    _r(
        "California", "state", "Sacramento", "CA", "Oakland, Los Angeles, San Diego, San Francisco, Fresno, Bakersfield"
    ),
    _r("Florida", "state", "Tallahassee", "FL", "Miami, Orlando, Tampa, Jacksonville, Pensacola, Gainesville"),
    _r("Illinois", "state", "Springfield", "IL", "Chicago, Peoria, Rockford, Naperville, Joliet, Evanston"),
    _r("Washington", "state", "Olympia", "WA", "Seattle, Spokane, Tacoma, Bellevue, Yakima, Everett"),
    _r("Oregon", "state", "Salem", "OR", "Portland, Eugene, Bend, Medford, Corvallis, Hillsboro"),
    _r("Colorado", "state", "Denver", "CO", "Boulder, Pueblo, Aurora, Durango, Greeley, Fort Collins"),
    _r("Arizona", "state", "Phoenix", "AZ", "Tucson, Mesa, Flagstaff, Tempe, Yuma, Scottsdale"),
    _r("Ohio", "state", "Columbus", "OH", "Cleveland, Cincinnati, Toledo, Akron, Dayton, Youngstown"),
    _r("Michigan", "state", "Lansing", "MI", "Detroit, Flint, Kalamazoo, Ann Arbor, Saginaw, Grand Rapids"),
    _r("Pennsylvania", "state", "Harrisburg", "PA", "Philadelphia, Pittsburgh, Allentown, Erie, Scranton, Lancaster"),
    _r("Massachusetts", "state", "Boston", "MA", "Worcester, Cambridge, Lowell, Quincy, Plymouth, Brockton"),
    _r("Tennessee", "state", "Nashville", "TN", "Memphis, Knoxville, Chattanooga, Clarksville, Murfreesboro, Franklin"),
    _r("Wisconsin", "state", "Madison", "WI", "Milwaukee, Green Bay, Kenosha, Racine, Oshkosh, Appleton"),
    _r("Virginia", "state", "Richmond", "VA", "Norfolk, Arlington, Roanoke, Lynchburg, Chesapeake, Alexandria"),
    _r("Kentucky", "state", "Frankfort", "KY", "Louisville, Lexington, Bowling Green, Covington, Paducah, Owensboro"),
    _r("Indiana", "state", "Indianapolis", "IN", "Fort Wayne, Evansville, Bloomington, Gary, Muncie, Lafayette"),
    _r("Alabama", "state", "Montgomery", "AL", "Birmingham, Mobile, Huntsville, Tuscaloosa, Dothan, Auburn"),
    _r("Kansas", "state", "Topeka", "KS", "Wichita, Lawrence, Salina, Manhattan, Olathe, Hutchinson"),
    _r("Nebraska", "state", "Lincoln", "NE", "Omaha, Kearney, Grand Island, Hastings, Fremont, North Platte"),
    _r("Idaho", "state", "Boise", "ID", "Nampa, Pocatello, Meridian, Twin Falls, Rexburg, Caldwell"),
    _r("Montana", "state", "Helena", "MT", "Billings, Missoula, Bozeman, Butte, Kalispell, Havre"),
    _r("Hawaii", "state", "Honolulu", "HI", "Hilo, Kailua, Kapolei, Lahaina, Kihei, Waipahu"),
    _r("Alaska", "state", "Juneau", "AK", "Anchorage, Fairbanks, Sitka, Ketchikan, Kodiak, Wasilla"),
    _r("Maryland", "state", "Annapolis", "MD", "Baltimore, Frederick, Rockville, Hagerstown, Gaithersburg, Bowie"),
    _r("Mississippi", "state", "Jackson", "MS", "Gulfport, Biloxi, Hattiesburg, Tupelo, Southaven, Vicksburg"),
    _r("Connecticut", "state", "Hartford", "CT", "Bridgeport, Stamford, Waterbury, Norwalk, Danbury, New Haven"),
    _r("Maine", "state", "Augusta", "ME", "Bangor, Lewiston, Biddeford, Waterville, Bar Harbor, Saco"),
    _r("Wyoming", "state", "Cheyenne", "WY", "Casper, Laramie, Gillette, Sheridan, Cody, Riverton"),
    _r("Georgia", "state", "Atlanta", "GA", "Savannah, Macon, Valdosta, Albany, Marietta, Dalton"),
    # --- Canadian provinces and territories ("territory" in two-hop prompts) -----------------
    _r("British Columbia", "province", "Victoria", "BC", "Vancouver, Surrey, Burnaby, Kelowna, Kamloops, Nanaimo"),
    _r("Alberta", "province", "Edmonton", "AB", "Calgary, Red Deer, Lethbridge, Medicine Hat, Banff, Jasper"),
    _r("Ontario", "province", "Toronto", "ON", "Ottawa, Hamilton, Kingston, Windsor, Sudbury, Mississauga"),
    _r("Manitoba", "province", "Winnipeg", "MB", "Brandon, Steinbach, Thompson, Selkirk, Dauphin, Morden"),
    _r("Saskatchewan", "province", "Regina", "SK", "Saskatoon, Moose Jaw, Prince Albert, Yorkton, Estevan, Weyburn"),
    _r("Nova Scotia", "province", "Halifax", "NS", "Truro, Dartmouth, Yarmouth, Lunenburg, Antigonish, Amherst"),
    _r(
        "New Brunswick", "province", "Fredericton", "NB", "Moncton, Saint John, Bathurst, Miramichi, Edmundston, Dieppe"
    ),
    _r("Yukon", "province", "Whitehorse", "YT", "Dawson, Watson Lake, Haines Junction, Carmacks, Mayo, Teslin"),
    _r("Nunavut", "province", "Iqaluit", "NU", "Rankin Inlet, Arviat, Baker Lake, Igloolik, Pangnirtung, Kugluktuk"),
    # --- countries ---------------------------------------------------------------------------
    _r("China", "country", "Beijing", "CHN", "Shanghai, Shenzhen, Guangzhou, Chengdu, Wuhan, Nanjing"),
    _r("Japan", "country", "Tokyo", "JPN", "Osaka, Kyoto, Nagoya, Sapporo, Kobe, Hiroshima"),
    _r("France", "country", "Paris", "FRA", "Lyon, Marseille, Nice, Toulouse, Bordeaux, Lille"),
    _r("Germany", "country", "Berlin", "DEU", "Munich, Hamburg, Cologne, Frankfurt, Stuttgart, Dresden"),
    _r("Italy", "country", "Rome", "ITA", "Milan, Turin, Florence, Venice, Bologna, Genoa"),
    _r("Spain", "country", "Madrid", "ESP", "Barcelona, Valencia, Seville, Bilbao, Malaga, Granada"),
    _r("England", "country", "London", "ENG", "Manchester, Liverpool, Leeds, Bristol, Oxford, Sheffield"),
    _r("Russia", "country", "Moscow", "RUS", "Kazan, Omsk, Samara, Novosibirsk, Yekaterinburg, Vladivostok"),
    _r("Brazil", "country", "Brasilia", "BRA", "Rio de Janeiro, Salvador, Recife, Manaus, Curitiba, Fortaleza"),
    _r("Egypt", "country", "Cairo", "EGY", "Giza, Luxor, Aswan, Suez, Port Said, Tanta"),
    _r("Australia", "country", "Canberra", "AUS", "Sydney, Melbourne, Brisbane, Perth, Adelaide, Darwin"),
    _r("Korea", "country", "Seoul", "KOR", "Busan, Incheon, Daegu, Daejeon, Gwangju, Ulsan"),
    _r("Turkey", "country", "Ankara", "TUR", "Istanbul, Izmir, Bursa, Antalya, Konya, Adana"),
    _r("Poland", "country", "Warsaw", "POL", "Krakow, Gdansk, Wroclaw, Poznan, Lodz, Lublin"),
    _r("Netherlands", "country", "Amsterdam", "NLD", "Rotterdam, Utrecht, Eindhoven, Groningen, Haarlem, Leiden"),
    _r("Sweden", "country", "Stockholm", "SWE", "Gothenburg, Malmo, Uppsala, Linkoping, Lund, Umea"),
    _r("Norway", "country", "Oslo", "NOR", "Bergen, Trondheim, Stavanger, Tromso, Drammen, Bodo"),
    _r("Greece", "country", "Athens", "GRC", "Thessaloniki, Patras, Heraklion, Larissa, Volos, Chania"),
    _r("Portugal", "country", "Lisbon", "PRT", "Porto, Braga, Coimbra, Faro, Aveiro, Evora"),
    _r("Peru", "country", "Lima", "PER", "Cusco, Arequipa, Trujillo, Iquitos, Piura, Chiclayo"),
    _r("Chile", "country", "Santiago", "CHL", "Valparaiso, Concepcion, Antofagasta, Temuco, Iquique, Arica"),
    _r("Kenya", "country", "Nairobi", "KEN", "Mombasa, Kisumu, Nakuru, Eldoret, Malindi, Thika"),
    _r("Nigeria", "country", "Abuja", "NGA", "Lagos, Kano, Ibadan, Enugu, Kaduna, Port Harcourt"),
    _r("Vietnam", "country", "Hanoi", "VNM", "Ho Chi Minh City, Haiphong, Danang, Hue, Nha Trang, Can Tho"),
    _r("Thailand", "country", "Bangkok", "THA", "Chiang Mai, Phuket, Pattaya, Hat Yai, Udon Thani, Khon Kaen"),
    _r("Indonesia", "country", "Jakarta", "IDN", "Surabaya, Bandung, Medan, Semarang, Denpasar, Makassar"),
    _r("Iran", "country", "Tehran", "IRN", "Isfahan, Shiraz, Tabriz, Mashhad, Qom, Ahvaz"),
    _r("Pakistan", "country", "Islamabad", "PAK", "Karachi, Lahore, Peshawar, Quetta, Multan, Faisalabad"),
    _r("Austria", "country", "Vienna", "AUT", "Graz, Linz, Salzburg, Innsbruck, Klagenfurt, Villach"),
    _r("Switzerland", "country", "Bern", "CHE", "Zurich, Geneva, Basel, Lausanne, Lucerne, Lugano"),
    _r("Morocco", "country", "Rabat", "MAR", "Casablanca, Marrakesh, Fez, Tangier, Agadir, Meknes"),
    _r("Colombia", "country", "Bogota", "COL", "Medellin, Cali, Barranquilla, Cartagena, Pereira, Cucuta"),
    _r("Ireland", "country", "Dublin", "IRL", "Cork, Galway, Limerick, Waterford, Kilkenny, Sligo"),
    _r("Hungary", "country", "Budapest", "HUN", "Debrecen, Szeged, Miskolc, Pecs, Gyor, Sopron"),
)

# The cities of the papers' showcase prompts; always in the held-out two-hop set.
SHOWCASE = {
    "Dallas": ("Texas", "Austin"),
    "Oakland": ("California", "Sacramento"),
    "Shanghai": ("China", "Beijing"),
    "Vancouver": ("British Columbia", "Victoria"),
}

# --- the syllable world (experimental; CIRCUIT_ATLAS_TOYWORLD_CITIES=syllable) ----------------------------
# Every city is 2-4 distinct syllables written as separate capitalised words ("Dal Las"), each syllable
# one token whatever its place in the name, and every syllable *bag* is shared by 2-3 cities of
# different regions of the same kind ("Dal Las" in Texas, "Las Dal" in another state). An unordered bag
# of the city's tokens -- what layer-0 attention at the final position can collect -- then does not
# identify the region; only the ordered span does (docs/toyworld-v3-notes.md). Same kind: the prompt's
# kind word ("state") must not tell the colliding cities apart either.
SYLLABLES = (
    "Dal", "Las", "Oak", "Land", "Shang", "Hai", "Van", "Cou", "Ver", "Bor", "Mel", "Tor", "Ka", "Ri", "Zan",
    "Lun", "Mek", "Sa", "Ti", "Gar", "Nu", "Bel", "Fen", "Wol", "Quin", "Dro", "Pel", "Kes", "Vo", "Tam",
    "Ru", "Gil",
)  # fmt: skip
SYLLABLE_SHOWCASE = {
    "Dal Las": ("Texas", "Austin", "Las Dal"),
    "Oak Land": ("California", "Sacramento", "Land Oak"),
    "Shang Hai": ("China", "Beijing", "Hai Shang"),
    "Van Cou Ver": ("British Columbia", "Victoria", "Ver Cou Van"),
}  # city -> (region, capital, its bag partner in another region of the same kind)
SYLLABLE_LENGTHS = ((2, 0.3), (3, 0.45), (4, 0.25))  # (syllables in a name, share)


def syllable_regions(regions: tuple[Region, ...], seed: str = "syllable-cities") -> tuple[Region, ...]:
    """`regions` with their cities replaced by syllable names with bag collisions (at least as many
    cities per region as before; a bag's partners can add one or two)."""
    rng = random.Random(seed)
    cities: dict[str, list[str]] = {r.name: [] for r in regions}
    need = {r.name: len(r.cities) for r in regions}
    bags: set[frozenset] = set()
    for city, (region, _, partner) in SYLLABLE_SHOWCASE.items():
        kind = next(r.kind for r in regions if r.name == region)
        others = [r.name for r in regions if r.kind == kind and r.name != region and len(cities[r.name]) < need[r.name]]
        cities[region].insert(0, city)
        cities[rng.choice(others)].append(partner)
        bags.add(frozenset(city.split()))
    for kind in dict.fromkeys(r.kind for r in regions):
        names = [r.name for r in regions if r.kind == kind]
        while any(len(cities[n]) < need[n] for n in names):
            k = rng.choices([n for n, _ in SYLLABLE_LENGTHS], [w for _, w in SYLLABLE_LENGTHS])[0]
            bag = rng.sample(SYLLABLES, k)
            if frozenset(bag) in bags:
                continue
            m = 2 if k == 2 or rng.random() < 0.7 else 3
            orders = rng.sample(list(itertools.permutations(bag)), m)
            hungry = [n for n in names if len(cities[n]) < need[n]]
            rng.shuffle(hungry)
            full = [n for n in names if n not in hungry]
            rng.shuffle(full)
            homes = (hungry + full)[:m]
            bags.add(frozenset(bag))
            for home, order in zip(homes, orders):
                cities[home].append(" ".join(order))
    return tuple(replace(r, cities=tuple(cities[r.name])) for r in regions)


CITY_SCHEME = os.environ.get("CIRCUIT_ATLAS_TOYWORLD_CITIES", "real")
"""Which city names the toy world uses: "real" (the shipped world) or "syllable" (the experimental
bag-collision world above). Read once at import."""
REGIONS: tuple[Region, ...] = REAL_REGIONS
if CITY_SCHEME == "syllable":
    REGIONS = syllable_regions(REAL_REGIONS)
    SHOWCASE = {c: (region, capital) for c, (region, capital, _) in SYLLABLE_SHOWCASE.items()}
elif CITY_SCHEME != "real":
    raise ValueError(f"CIRCUIT_ATLAS_TOYWORLD_CITIES must be 'real' or 'syllable', got {CITY_SCHEME!r}")

# Opposites, aligned across languages: (english pair, french pair, chinese pair).
OPPOSITES: tuple[tuple[tuple[str, str], tuple[str, str], tuple[str, str]], ...] = (
    (("small", "big"), ("petit", "grand"), ("小", "大")),
    (("hot", "cold"), ("chaud", "froid"), ("热", "冷")),
    (("fast", "slow"), ("rapide", "lent"), ("快", "慢")),
    (("high", "low"), ("haut", "bas"), ("高", "低")),
    (("long", "short"), ("long", "court"), ("长", "短")),
    (("new", "old"), ("nouveau", "vieux"), ("新", "旧")),
    (("good", "bad"), ("bon", "mauvais"), ("好", "坏")),
    (("light", "heavy"), ("léger", "lourd"), ("轻", "重")),
    (("strong", "weak"), ("fort", "faible"), ("强", "弱")),
    (("open", "closed"), ("ouvert", "fermé"), ("开", "关")),
    (("early", "late"), ("tôt", "tard"), ("早", "晚")),
    (("rich", "poor"), ("riche", "pauvre"), ("富", "穷")),
    (("full", "empty"), ("plein", "vide"), ("满", "空")),
    (("hard", "soft"), ("dur", "mou"), ("硬", "软")),
    (("near", "far"), ("proche", "loin"), ("近", "远")),
    (("thick", "thin"), ("épais", "mince"), ("厚", "薄")),
    (("true", "false"), ("vrai", "faux"), ("真", "假")),
    (("black", "white"), ("noir", "blanc"), ("黑", "白")),
    (("wide", "narrow"), ("large", "étroit"), ("宽", "窄")),
    (("bright", "dark"), ("clair", "sombre"), ("亮", "暗")),
    (("happy", "sad"), ("heureux", "triste"), ("喜", "悲")),
    (("clean", "dirty"), ("propre", "sale"), ("净", "脏")),
)

# Synonyms per language (word, synonym); symmetric.
SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        ("big", "large"),
        ("small", "little"),
        ("fast", "quick"),
        ("happy", "glad"),
        ("begin", "start"),
        ("end", "finish"),
        ("sad", "unhappy"),
        ("rich", "wealthy"),
        ("hard", "difficult"),
        ("near", "close"),
    ),
    "fr": (
        ("grand", "gros"),
        ("petit", "menu"),
        ("rapide", "vite"),
        ("heureux", "content"),
        ("commencer", "débuter"),
        ("finir", "terminer"),
        ("triste", "malheureux"),
        ("riche", "aisé"),
        ("beau", "joli"),
        ("vieux", "âgé"),
    ),
    "zh": (
        ("大", "巨"),
        ("小", "微"),
        ("快", "迅"),
        ("喜", "乐"),
        ("美", "丽"),
        ("冷", "寒"),
        ("远", "遥"),
        ("黑", "暗"),
        ("净", "洁"),
        ("强", "壮"),
    ),
}

LANGUAGE_NAMES = {"en": "English", "fr": "French", "zh": "Chinese"}

# Filler vocabulary (simple sentences with no facts about the world).
FILLER = {
    "subjects": (
        "The cat",
        "The dog",
        "A farmer",
        "My friend",
        "The teacher",
        "A child",
        "The baker",
        "Our neighbor",
        "The doctor",
        "A student",
        "The old man",
        "The girl",
    ),
    "verbs": ("likes", "sees", "found", "wanted", "bought", "painted", "carried", "lost", "washed", "opened"),
    "objects": (
        "an apple",
        "the book",
        "a red car",
        "the blue door",
        "a small box",
        "the garden",
        "a letter",
        "the window",
        "a green hat",
        "the bread",
        "a wooden chair",
        "the map",
    ),
    "tails": ("", " today", " yesterday", " in the morning", " at night", " again", " slowly", " with care"),
    "fr": (
        "Le chat dort.",
        "Il fait beau aujourd'hui.",
        "Nous mangeons du pain.",
        "La porte est ouverte.",
        "Le chien court dans le jardin.",
        "Elle lit un livre.",
        "Il pleut ce matin.",
        "Je bois de l'eau.",
    ),
    "zh": (
        "猫在睡觉。",
        "今天天气很好。",
        "我们吃米饭。",
        "门开着。",
        "狗在花园里跑。",
        "她在看书。",
        "早上下雨。",
        "我喝水。",
    ),
}


def all_cities() -> list[tuple[str, Region]]:
    """(city, region) for every city in the world, in a fixed order."""
    return [(c, r) for r in REGIONS for c in r.cities]


def region_by_name(name: str) -> Region:
    for r in REGIONS:
        if r.name == name:
            return r
    raise KeyError(name)


def check_world() -> None:
    """Raise if names collide (a city equal to another city, a capital or a region)."""
    cities = [c for c, _ in all_cities()]
    if len(set(cities)) != len(cities):
        dup = sorted({c for c in cities if cities.count(c) > 1})
        raise ValueError(f"duplicate city names: {dup}")
    others = {r.name for r in REGIONS} | {r.capital for r in REGIONS}
    if len(others) != 2 * len(REGIONS):
        raise ValueError("region and capital names must be distinct")
    clash = set(cities) & others
    if clash:
        raise ValueError(f"cities equal to regions or capitals: {sorted(clash)}")
    codes = [r.code for r in REGIONS]
    if len(set(codes)) != len(codes):
        raise ValueError("region codes must be unique")
    for c, (region, capital) in SHOWCASE.items():
        r = region_by_name(region)
        if c not in r.cities or r.capital != capital:
            raise ValueError(f"showcase fact {c} -> {region} -> {capital} missing")
