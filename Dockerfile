# One image for every Breakout process; the command picks which (worker, api, demo).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY breakout ./breakout
COPY streams ./streams
COPY api ./api
COPY cli ./cli
RUN pip install --no-cache-dir .
ENV BREAKOUT_DATA_DIR=/var/lib/breakout
VOLUME /var/lib/breakout
ENTRYPOINT ["breakout"]
CMD ["worker"]
