"""What the seed's service did for one reading: PUT /api/nodes/NAME (POST on create), Basic auth as
the node, {"name": NAME, "data": "T H"} stored as a row through the ORM (autocommit: one commit each),
202."""
from django.http import JsonResponse
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Node, Reading


def healthz(request):
    return JsonResponse({"ok": True})


def error(code: int, name: str, detail: str) -> Response:
    return Response({"error": name, "detail": detail}, status=code)


class NodeReading(APIView):
    def put(self, request, name):
        return self.store(request, name, create=False)

    def post(self, request, name):
        return self.store(request, name, create=True)

    def store(self, request, name, *, create):
        if request.user.username != name:
            return error(status.HTTP_403_FORBIDDEN, "wrong_node", "these credentials are another node's")
        body = request.data
        try:
            temperature, humidity = (float(x) for x in body["data"].split())
        except (TypeError, KeyError, ValueError, AttributeError):
            return error(status.HTTP_400_BAD_REQUEST, "bad_data", 'send {"name": ..., "data": "<temperature> <humidity>"}')
        if body.get("name") != name:
            return error(status.HTTP_403_FORBIDDEN, "wrong_name", "the body's name differs from the URL's")
        if create:
            node, _ = Node.objects.get_or_create(name=name, defaults={"user": request.user})
        else:
            node = Node.objects.filter(name=name).first()
            if node is None:
                response = error(status.HTTP_405_METHOD_NOT_ALLOWED, "not_created", "POST the first reading")
                response["Allow"] = "POST"
                return response
        reading = Reading.objects.create(node=node, temperature=temperature, humidity=humidity)
        return Response({"stored": True, "node": name, "time": reading.time.isoformat()}, status=status.HTTP_202_ACCEPTED)
