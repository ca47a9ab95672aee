"""Plausible wrong versions of notebook 16's exercise (a radix tree's match_prefix and insert).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

VARIANTS = {
    "match_prefix": {
        # counts a whole edge once its first token matches: over-counts where the tokens leave it
        "counts_whole_edges": '''def match_prefix(root, tokens):
    node, n = root, 0
    while n < len(tokens) and tokens[n] in node.children:
        node = node.children[tokens[n]]
        n += len(node.key)
    return min(n, len(tokens))''',
        # looks at the first edge only
        "first_edge_only": '''def match_prefix(root, tokens):
    if not tokens or tokens[0] not in root.children:
        return 0
    return common_prefix_len(root.children[tokens[0]].key, tokens)''',
        # walks on below an edge it left in the middle
        "no_stop_inside_an_edge": '''def match_prefix(root, tokens):
    node, n = root, 0
    while n < len(tokens) and tokens[n] in node.children:
        child = node.children[tokens[n]]
        k = common_prefix_len(child.key, tokens[n:])
        n += k
        if k == 0:
            break
        node = child
    return n''',
    },
    "insert": {
        # never splits: the rest of the tokens replaces the child that shares their first token
        "no_split": '''def insert(root, tokens):
    node, n = root, 0
    while n < len(tokens):
        child = node.children.get(tokens[n])
        k = common_prefix_len(child.key, tokens[n:]) if child is not None else 0
        if child is None or k < len(child.key):
            node.children[tokens[n]] = Node(tokens[n:])
            break
        n += k
        node = child
    return min(n, len(tokens))''',
        # splits, but the new middle node loses the old node's subtree
        "split_drops_the_subtree": '''def insert(root, tokens):
    node, n = root, 0
    while n < len(tokens):
        child = node.children.get(tokens[n])
        if child is None:
            node.children[tokens[n]] = Node(tokens[n:])
            break
        k = common_prefix_len(child.key, tokens[n:])
        if k < len(child.key):
            mid = Node(child.key[:k])
            mid.children[child.key[k]] = Node(child.key[k:])
            node.children[tokens[n]] = mid
            child = mid
        n += k
        node = child
    return min(n, len(tokens))''',
        # the new leaf holds the whole sequence instead of what is left of it
        "leaf_holds_everything": '''def insert(root, tokens):
    node, n = root, 0
    while n < len(tokens):
        child = node.children.get(tokens[n])
        if child is None:
            node.children[tokens[n]] = Node(tokens)
            break
        k = common_prefix_len(child.key, tokens[n:])
        if k < len(child.key):
            mid = Node(child.key[:k])
            child.key = child.key[k:]
            mid.children[child.key[0]] = child
            node.children[tokens[n]] = mid
            child = mid
        n += k
        node = child
    return min(n, len(tokens))''',
        # returns the inserted length, not what was there before
        "returns_the_length": '''def insert(root, tokens):
    node, n = root, 0
    while n < len(tokens):
        child = node.children.get(tokens[n])
        if child is None:
            node.children[tokens[n]] = Node(tokens[n:])
            break
        k = common_prefix_len(child.key, tokens[n:])
        if k < len(child.key):
            mid = Node(child.key[:k])
            child.key = child.key[k:]
            mid.children[child.key[0]] = child
            node.children[tokens[n]] = mid
            child = mid
        n += k
        node = child
    return len(tokens)''',
    },
}
